"""A real `digits add` writes the batch's page (report.html) into its folder and publishes
it as an artifact; `digits data show` finds it."""

import asyncio
import re

import numpy as np
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from digits.data.batches import PAGE
from digits.registry.store import Registry
from tests.helpers.serving import publish_model
from tests.helpers.synth import make_digits, make_prototypes, write_dataset


def dirs_of(tmp_path):
    reference = write_dataset(tmp_path / "mnist")  # its test digits: make_digits(300, 2, ...)
    return ["--store", str(tmp_path / "data"), "--reference-dir", str(reference),
            "--registry", str(tmp_path / "registry")]


def save_random_model(path):
    """A Sequential 784-10 softmax of random weights (drift.penultimate_features walks a
    Sequential's layers; a functional model's InputLayer is not callable there)."""
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential([keras.Input((28, 28)), keras.layers.Rescaling(1 / 255),
                      keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]).save(path)
    return path


def latest_page_artifact():
    """The newest `batch-report` artifact (the flow tests share one Prefect API)."""
    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["batch-report"])),
                sort=ArtifactSort.CREATED_DESC, limit=1)

    [artifact] = asyncio.run(read())
    return artifact


def test_an_accepted_batch_has_its_page_and_data_show_finds_it(cli, tmp_path):
    dirs = dirs_of(tmp_path)
    images, labels = make_digits(60, 5, make_prototypes())
    np.savez(tmp_path / "good.npz", images=images, labels=labels)
    code, _, err = cli("add", tmp_path / "good.npz", "--name", "good", *dirs)
    assert code == 0, err
    [folder] = (tmp_path / "data" / "batches").glob("[0-9a-f]*")
    page = (folder / PAGE).read_text()
    assert '<span class="status accepted">' in page and "<h2>Checks</h2>" in page
    assert latest_page_artifact().data.count("data:image/png;base64,") == page.count(
        "data:image/png;base64,")
    code, out, _ = cli("data", "show", folder.name[:12], "--store", tmp_path / "data")
    assert code == 0 and out.splitlines()[-1] == f"page    {folder / PAGE}"


def test_a_quarantined_batch_shows_its_leak_and_the_models_disagreements(cli, tmp_path):
    dirs = dirs_of(tmp_path)
    registry = Registry(tmp_path / "registry")
    publish_model(registry, save_random_model(tmp_path / "random.keras"))
    test_images, _ = make_digits(300, 2, make_prototypes())
    images, labels = make_digits(60, 5, make_prototypes())
    images[9] = test_images[17]
    np.savez(tmp_path / "leaky.npz", images=images, labels=labels)
    code, _, err = cli("add", tmp_path / "leaky.npz", "--name", "leaky", *dirs)
    assert code == 4 and "quarantined: leakage: observed 1" in err.strip().splitlines()[-1]
    [folder] = (tmp_path / "data" / "quarantine").iterdir()
    page = (folder / PAGE).read_text()
    leak = page.split('<section id="check-leakage">')[1].split("</section>")[0]
    assert leak.count('<td class="tile">') == 1 and "row 9 · nearest gap 0.0000" in leak
    # A model of random weights disagrees with most labels: the grid names its digits.
    agreement = page.split('<section id="check-label-agreement">')[1].split("</section>")[0]
    assert len(re.findall(r"label \d · model \d \(\d\.\d\d\)", agreement)) >= 20
    assert "check-leakage" in latest_page_artifact().data
