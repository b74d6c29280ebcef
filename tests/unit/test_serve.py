"""The HTTP service (docs/architecture.md, "The HTTP service") in-process, with FastAPI's TestClient,
on tiny Keras models published to a temporary registry."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digits.data.images import load_inputs
from digits.registry.load import Predictor, load_predictor
from digits.registry.store import Registry
from digits.serving import inputs
from digits.serving.app import ASSETS, Limits, create_app
from digits.serving.settings import DEFAULT_MAX_PIXELS, allowed_hosts
from tests.helpers.manifests import make_manifest
from tests.helpers.processes import REPO
from tests.helpers.serving import (
    FIRST_LOAD_S,
    claimed_size_png,
    digit_png,
    mnist_like,
    palette_png,
    png_bytes,
    publish_model,
    replace_file,
    save_tiny_model,
    wait_until,
)

FOLLOW_S = 5.0  # the promise: answers come from a new target within 5 s
POLL_S = 0.05
LOCAL_URL = "http://127.0.0.1:8000"  # the service's own origin, as a browser on it sends it


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {name: save_tiny_model(folder / f"{name}.keras", seed) for name, seed in
            (("a", 1), ("b", 2))}


@pytest.fixture(scope="module")
def keras_model(models):
    import keras

    return keras.saving.load_model(models["a"], safe_mode=True)


@pytest.fixture
def registry(tmp_path, models) -> Registry:
    registry = Registry(tmp_path / "registry")
    publish_model(registry, models["a"], accuracy=0.981)
    return registry


@contextmanager
def serving(registry: Registry, ready: bool = True, **kwargs):
    with TestClient(create_app(registry, poll_s=POLL_S, **kwargs), base_url=LOCAL_URL) as client:
        if ready:
            wait_until(lambda: client.get("/readyz").status_code == 200, "the first model",
                   FIRST_LOAD_S)
        yield client


@pytest.fixture
def client(registry):
    with serving(registry) as client:
        yield client




def served_version(client: TestClient) -> str:
    body = {"instances": mnist_like(1).tolist()}
    return client.post("/v1/predict", json=body).json()["model"]["version"]


# --- endpoints ---------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model"]["version"] == "v1" and ready.json()["model"]["ref"] == "production"
    assert ready.json()["problem"] is None


def test_images_are_normalised_as_digits_predict_does_and_answered_in_order(
    client, keras_model, tmp_path
):
    images = {
        "seven.png": digit_png(),
        "dark.png": digit_png(dark_ink=True, size=(300, 200)),
    }
    blob = Image.new("L", (40, 40))
    blob.paste(255, (5, 5, 30, 15))
    images["blob.png"] = png_bytes(blob)
    for name, data in images.items():
        (tmp_path / name).write_bytes(data)
    files = [("file", (name, data, "image/png")) for name, data in images.items()]

    answer = client.post("/v1/predict", files=files)

    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == {"version": "v1", "ref": "production"}
    _, batch = load_inputs([tmp_path / name for name in images])  # what `digits predict` reads
    expected = keras_model.predict(batch, verbose=0)
    got = answer.json()["predictions"]
    assert len(got) == 3
    for row, want in zip(got, expected):
        assert row["digit"] == int(want.argmax())
        np.testing.assert_allclose(row["probabilities"], want, atol=1e-5)
    assert got[0]["probabilities"] != got[2]["probabilities"]  # order is not an accident


def test_json_instances_are_used_as_is(client, keras_model):
    pixels = mnist_like(4)
    answer = client.post("/v1/predict", json={"instances": pixels.tolist()})
    assert answer.status_code == 200, answer.text
    expected = keras_model.predict(pixels.astype(np.float32), verbose=0)
    got = np.array([row["probabilities"] for row in answer.json()["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [row["digit"] for row in answer.json()["predictions"]] == list(expected.argmax(1))


def test_models_lists_what_digits_models_json_prints_but_the_path(client, registry, models):
    publish_model(registry, models["b"], accuracy=0.99, alias=None)
    listed = [{k: v for k, v in entry.items() if k != "path"} for entry in registry.versions()]
    assert client.get("/v1/registry/versions").json() == json.loads(json.dumps(listed))
    assert client.get("/v1/registry/versions/production").json() == registry.manifest("v1")
    assert client.get("/v1/registry/versions/v2").json()["version"] == "v2"


def test_a_manifest_is_served_without_the_server_paths_it_records(client, registry, tmp_path):
    """A version trained from --data-dir records that folder; HTTP clients see its name."""
    source = tmp_path / "run"
    (source / "model.keras").parent.mkdir(parents=True)
    (source / "model.keras").write_bytes(b"weights")
    manifest = make_manifest()
    manifest["data"] = {**manifest["data"], "source": str(tmp_path / "idx-folder")}
    version = registry.publish(source, manifest, alias=None)

    for url in ("/v1/registry/versions", f"/v1/registry/versions/{version}"):
        text = client.get(url).text
        assert str(tmp_path) not in text and "idx-folder" in text, url
    assert registry.manifest(version)["data"]["source"] == str(tmp_path / "idx-folder")


@pytest.mark.parametrize(
    "ref, status, message",
    [
        ("v9", 404, "unknown version 'v9'"),
        ("staging", 404, "unknown alias 'staging'"),
        ("Prod", 400, "invalid ref"),
        ("v0", 400, "invalid ref"),
        ("%2E%2E", 400, "invalid ref"),
    ],
)
def test_unknown_or_malformed_ref(client, ref, status, message):
    answer = client.get(f"/v1/registry/versions/{ref}")
    assert answer.status_code == status and message in answer.json()["error"]


def test_card_and_plots_are_served_from_the_manifest(client, registry):
    card = client.get("/v1/registry/versions/production/files/card.md")
    assert card.status_code == 200 and card.text.startswith("# digits model v1")
    plot = client.get("/v1/registry/versions/v1/files/plots/confusion.png")
    assert plot.headers["content-type"] == "image/png"
    assert plot.content == (registry.root / "v1" / "plots" / "confusion.png").read_bytes()


@pytest.mark.parametrize(
    "name", ["model.keras", "manifest.json", "plots/missing.png", "%2E%2E/aliases.json",
             "plots/%2E%2E/model.keras", "plots"],
)
def test_no_other_file_is_served(client, name):
    answer = client.get(f"/v1/registry/versions/v1/files/{name}")
    assert answer.status_code == 404 and answer.json()["error"]


def test_a_tampered_plot_is_refused(client, registry):
    (registry.root / "v1" / "plots" / "curves.png").write_bytes(b"not the plot")
    answer = client.get("/v1/registry/versions/v1/files/plots/curves.png")
    assert answer.status_code == 503 and "checksum" in answer.json()["error"]


# --- bad input: a 4xx JSON error naming the problem, never a 500 ------------------------

def upload(name: str, data: bytes, field: str = "file") -> dict:
    return {"files": {field: (name, data, "image/png")}}


def raw(body: bytes, content_type: str | None = "application/json") -> dict:
    return {"content": body, "headers": {"content-type": content_type} if content_type else {}}


def instances(value) -> dict:
    return {"json": {"instances": value}}


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (20, 20)).save(buffer, format="GIF")
    return buffer.getvalue()


INFINITE = json.dumps({"instances": [[[0] * 28] * 28]}).replace("0", "1e999", 1).encode()
# case -> (request, status, what the error says)
BAD_REQUESTS = {
    "not an image": (upload("a.png", b"hello"), 422, "'a.png': not a PNG or JPEG"),
    "a GIF": (upload("a.gif", gif()), 422, "not a PNG or JPEG"),
    "an empty file": (upload("a.png", b""), 422, "empty file"),
    "a truncated PNG": (upload("t.png", digit_png()[:200]), 422, "corrupt or truncated"),
    "a blank image": (upload("b.png", png_bytes(Image.new("L", (50, 50), 255))), 422, "blank"),
    "an image over the pixel limit": (
        upload("big.png", claimed_size_png(5000, 5000)),
        413,
        "5000x5000 pixels is over the limit of 4194304",
    ),
    "a decompression bomb": (  # refused by Pillow itself on opening
        upload("bomb.png", claimed_size_png(50_000, 50_000)),
        413,
        "decompression bomb",
    ),
    "no file field": (upload("a.png", digit_png(), field="image"), 422, "no field 'file'"),
    "a text file field": (
        {"data": {"file": "hello"}, "files": {"other": ("x", b"x")}}, 422, "file upload"
    ),
    "an empty body": (raw(b""), 400, "empty request body"),
    "no content type": (raw(b"abc", None), 415, "unsupported Content-Type"),
    "a text body": (raw(b"7", "text/plain"), 415, "'text/plain'"),
    "broken multipart": (raw(b"--x\r\nnonsense", "multipart/form-data"), 400, ""),
    "not JSON": (raw(b"{nope"), 400, "not valid JSON"),
    "NaN": (raw(b'{"instances": [NaN]}'), 400, "not valid JSON"),  # NaN is no JSON number
    "no instances": ({"json": {"images": []}}, 422, '"instances"'),
    "a list body": ({"json": [1, 2]}, 422, '"instances"'),
    "empty instances": (instances([]), 422, "non-empty"),
    "one image, not a list": (instances(np.zeros((28, 28)).tolist()), 422, "(N, 28, 28)"),
    "a wrong shape": (instances(np.zeros((1, 28, 27)).tolist()), 422, "got (1, 28, 27)"),
    "ragged rows": (instances([[[0] * 28] * 27 + [[0] * 3]]), 422, "28 rows of 28"),
    "strings": (instances([[["0"] * 28] * 28]), 422, "numbers"),
    "nulls": (instances([[[None] * 28] * 28]), 422, "numbers"),
    "booleans": (instances([[[True] * 28] * 28]), 422, "numbers"),
    # numpy reads true and false among numbers as 1 and 0: the issue's [true, 0, ...] -> 200
    "a boolean among numbers": (instances([[[True] + [0] * 27] * 28]), 422, "true or false"),
    "a boolean among fractions": (instances([[[0.5] * 27 + [False]] * 28]), 422, "true or false"),
    "a value over 255": (instances([[[256] * 28] * 28]), 422, "0..255"),
    "a negative value": (instances([[[-1] * 28] * 28]), 422, "0..255"),
    "an infinite number": (raw(INFINITE), 400, "number is infinity"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_a_4xx_json_error_naming_it(client, case):
    request, status, message = BAD_REQUESTS[case]
    answer = client.post("/v1/predict", **request)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert served_version(client) == "v1"  # still serving


def test_body_over_the_limit_by_header_or_by_size(registry):
    with serving(registry, limits=Limits(max_body_bytes=10_000)) as client:
        big = {"file": ("big.png", b"\0" * 20_000, "image/png")}
        answer = client.post("/v1/predict", files=big)
        assert answer.status_code == 413 and "10000 bytes" in answer.json()["error"]

        def chunks():  # no Content-Length: the bytes received are counted
            for _ in range(10):
                yield b"[" * 2000

        answer = client.post("/v1/predict", **raw(chunks()))
        assert answer.status_code == 413 and "10000 bytes" in answer.json()["error"]


def test_default_body_limit_is_2_mb(client):
    body = b'{"instances": ' + b" " * 2_000_000 + b"[]}"
    answer = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "2000000 bytes" in answer.json()["error"]


def test_pixel_limit_refuses_before_decoding(registry):
    with serving(registry, limits=Limits(max_pixels=100 * 100)) as client:
        image = png_bytes(Image.new("L", (101, 100)))
        answer = client.post("/v1/predict", files={"file": ("big.png", image, "image/png")})
        assert answer.status_code == 413
        assert "over the limit of 10000 pixels" in answer.json()["error"]
        many = [("file", (f"{i}.png", digit_png(size=(100, 100)), "image/png")) for i in range(5)]
        answer = client.post("/v1/predict", files=many)
        assert answer.status_code == 413 and "in all" in answer.json()["error"]


def test_every_header_is_checked_against_the_request_budget_before_any_decode(registry):
    with serving(registry, limits=Limits(max_pixels=100 * 100)) as client:
        # Each claims 100x100 and is cut short: decoding the first would answer 422.
        claims = [("file", (f"{i}.png", claimed_size_png(100, 100), "image/png")) for i in range(5)]
        answer = client.post("/v1/predict", files=claims)
        assert answer.status_code == 413 and "40000 pixels in all" in answer.json()["error"]


def test_default_pixel_limit_is_2048x2048(client):
    over = client.post("/v1/predict", **upload("wide.png", claimed_size_png(2049, 2048)))
    assert over.status_code == 413
    assert "2049x2048 pixels is over the limit of 4194304 pixels" in over.json()["error"]
    side = math.isqrt(DEFAULT_MAX_PIXELS)
    at_limit = client.post("/v1/predict", **upload("palette.png", palette_png(side)))
    assert at_limit.status_code == 200, at_limit.text


def compact_instances(images: np.ndarray) -> bytes:
    return json.dumps({"instances": images.tolist()}, separators=(",", ":")).encode()


def test_images_per_request_are_capped_in_json_and_in_multipart(registry):
    with serving(registry, limits=Limits(max_images=3)) as client:
        answer = client.post("/v1/predict", **raw(compact_instances(mnist_like(4))))
        assert answer.status_code == 413, answer.text
        assert "4 images: over the limit of 3 images per request" in answer.json()["error"]
        files = [("file", (f"{i}.png", digit_png(), "image/png")) for i in range(4)]
        answer = client.post("/v1/predict", files=files)
        assert answer.status_code == 413, answer.text
        assert "over the limit of 3 images per request" in answer.json()["error"]
        assert client.post("/v1/predict", files=files[:3]).status_code == 200
        assert client.post("/v1/predict", **raw(compact_instances(mnist_like(3)))).status_code == 200


def test_the_issues_flood_of_1230_blank_images_a_request_is_refused_by_default(client):
    """The issue: 1,230 blank images in a body just under 2 MB, 175 times, rotated the log."""
    body = compact_instances(np.zeros((1230, 28, 28), np.uint8))
    assert len(body) < 2_000_000
    answer = client.post("/v1/predict", **raw(body))
    assert answer.status_code == 413, answer.text
    assert "limit of 1000 images per request" in answer.json()["error"]
    at_limit = compact_instances(np.zeros((1000, 28, 28), np.uint8))
    assert client.post("/v1/predict", **raw(at_limit)).status_code == 200


def jpeg_bytes(image: Image.Image, orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation  # the Orientation tag
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def photo(size: tuple[int, int]) -> Image.Image:
    """A dark 7 on light paper, as a phone photo of one."""
    return Image.open(io.BytesIO(digit_png(dark_ink=True, size=size)))


@pytest.mark.parametrize(
    "make",
    [lambda: palette_png(2048), lambda: jpeg_bytes(photo((2048, 1536))),
     lambda: png_bytes(photo((1500, 900)).convert("I;16"))],
    ids=["palette PNG", "JPEG", "16-bit PNG"],
)
def test_images_are_shrunk_before_the_grayscale_conversion(monkeypatch, make):
    sizes = []
    convert = inputs.to_grayscale
    monkeypatch.setattr(inputs, "to_grayscale", lambda image: sizes.append(image.size) or
                        convert(image))
    inputs.decode_uploads([("big", make())], DEFAULT_MAX_PIXELS)
    assert max(sizes[0]) < 1024, sizes  # JPEG decoded at 1/4 scale, PNG reduced on loading


def test_exif_rotation_survives_the_shrink():
    """A photo stored sideways with an EXIF Orientation is read upright, as before."""
    upright = photo((1200, 1600))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    uploads = [
        ("upright.jpg", jpeg_bytes(upright)),
        ("tagged.jpg", jpeg_bytes(sideways, orientation=6)),  # 6: turn 90° clockwise to show
        ("untagged.jpg", jpeg_bytes(sideways)),
    ]
    rows = inputs.decode_uploads(uploads, DEFAULT_MAX_PIXELS)
    turned, lying = (np.abs(rows[0] - row).mean() for row in rows[1:])
    assert turned < 2 and lying > 10 * turned, (turned, lying)


DECODE_MEMORY = """
import sys, time
from pathlib import Path
from digits.serving.inputs import decode_uploads
from tests.helpers.serving import digit_png

def status_kb(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1])

data, limit = open(sys.argv[1], "rb").read(), int(sys.argv[2])
decode_uploads([("warm-up.png", digit_png())], limit)  # imports and first allocations
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
before = status_kb("VmRSS")
start = time.perf_counter()
decode_uploads([("palette.png", data)], limit)
print(time.perf_counter() - start, (status_kb("VmHWM") - before) / 1024)
"""
DECODE_PEAK_MB = 64  # measured 36: 1 byte a pixel decoded, widened to 4, premultiplied


@pytest.mark.slow
def test_a_small_palette_png_at_the_pixel_limit_decodes_in_little_memory(tmp_path):
    """The issue's upload: 28 KB of palette PNG with a transparent colour took 1 GiB."""
    path = tmp_path / "palette.png"
    path.write_bytes(palette_png(math.isqrt(DEFAULT_MAX_PIXELS)))
    measured = subprocess.run(
        [sys.executable, "-c", DECODE_MEMORY, str(path), str(DEFAULT_MAX_PIXELS)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert measured.returncode == 0, measured.stderr
    seconds, grown_mb = (float(value) for value in measured.stdout.split())
    print(f"{path.stat().st_size} bytes: {seconds:.3f} s, peak +{grown_mb:.0f} MB")
    assert grown_mb < DECODE_PEAK_MB, f"peak grew {grown_mb:.0f} MB in {seconds:.2f} s"


def stand_in(version: str, registry: Registry) -> Predictor:
    return Predictor(version, "production", "keras", lambda batch: np.full((len(batch), 10), 0.1))


def test_decodes_over_the_cap_wait_then_get_503_with_retry_after(registry):
    """A request holds its decode slot from its first body byte; one more waits, then 503."""
    limits = Limits(max_decodes=1, decode_wait_s=0.2)
    app = create_app(registry, limits=limits, open_model=stand_in)
    app.state.holder.refresh()  # ASGITransport runs no lifespan: load the model here
    body = json.dumps({"instances": mnist_like(1).tolist()}).encode()

    async def scenario() -> tuple[httpx.Response, ...]:
        release = asyncio.Event()

        async def slow_body():
            yield body[:10]
            await release.wait()
            yield body[10:]

        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL_URL) as client:
            json_type = {"content-type": "application/json"}
            first = asyncio.create_task(
                client.post("/v1/predict", content=slow_body(), headers=json_type)
            )
            await asyncio.sleep(0.1)  # the first request now holds the only slot
            second = await client.post("/v1/predict", content=body, headers=json_type)
            release.set()
            third = await client.post("/v1/predict", content=body, headers=json_type)
            return await first, second, third

    first, second, third = asyncio.run(scenario())
    assert first.status_code == 200 and third.status_code == 200
    assert second.status_code == 503 and second.headers["retry-after"] == "1"
    assert "busy" in second.json()["error"]


# --- requests from elsewhere ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://evil.example"},
        {"origin": "null"},  # a sandboxed frame or a file:// page
        {"origin": "http://127.0.0.1:9999"},  # another local service's page
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://localhost:3000"},
    ],
)
def test_cross_site_posts_are_refused(client, headers):
    answer = client.post("/v1/predict", **upload("seven.png", digit_png()), headers=headers)
    assert answer.status_code == 403 and "cross-site" in answer.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts
        {"origin": LOCAL_URL, "sec-fetch-site": "same-origin"},  # the page's own fetch
        {"sec-fetch-site": "none"},  # typed by the user
    ],
)
def test_same_origin_and_non_browser_posts_are_answered(client, headers):
    answer = client.post("/v1/predict", **upload("seven.png", digit_png()), headers=headers)
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000"])
def test_unknown_host_headers_are_refused_as_json(client, host):
    """A DNS-rebinding page reaches the service under its own name: refused, in the JSON
    shape of every other refusal."""
    answer = client.get("/v1/registry/versions", headers={"host": host})
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/json"
    assert "Invalid host header" in answer.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"])
def test_loopback_host_names_are_answered(client, host):
    assert client.get("/v1/registry/versions", headers={"host": host}).status_code == 200


def test_a_loopback_bind_allows_loopback_names_and_any_other_bind_any_host():
    for bind in ("127.0.0.1", "localhost", "::1"):
        assert allowed_hosts(bind) == ("127.0.0.1", "localhost", "[::1]")
    assert allowed_hosts("0.0.0.0") == ("*",) and allowed_hosts("192.168.1.5") == ("*",)


def test_responses_name_no_server_path(client, registry, models):
    root = str(registry.root)
    answers = [client.get("/v1/registry/versions"), client.get("/v1/registry/versions/v9"),
               client.get("/v1/registry/versions/staging")]
    assert all("path" not in entry for entry in answers[0].json())
    publish_model(registry, models["b"], alias=None)
    with (registry.root / "v2" / "model.keras").open("ab") as model:
        model.write(b"tampered")
    replace_file(registry.root / "aliases.json", json.dumps({"production": "v2"}))
    wait_until(lambda: client.get("/readyz").json()["problem"], "the problem")
    answers.append(client.get("/readyz"))
    assert "v2/model.keras" in answers[-1].json()["problem"]  # the file, named in the registry
    for answer in answers:
        assert root not in answer.text, answer.text


def test_a_registry_without_production_names_no_server_path(tmp_path):
    registry = Registry(tmp_path / "registry")
    with serving(registry, ready=False) as client:
        wait_until(lambda: client.get("/readyz").json()["problem"] != "loading", "a first check")
        predict = client.post("/v1/predict", **instances(mnist_like(1).tolist()))
        answers = [client.get("/readyz"), predict]
        for answer in answers:
            assert answer.status_code == 503 and "unknown alias 'production'" in answer.text
            assert str(tmp_path) not in answer.text, answer.text


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/v1/predict").status_code == 405
    assert "error" in client.get("/v1/predict").json()
    for path in ("/nope", "/docs", "/static/../serve.py", "/static/nope.js"):
        answer = client.get(path)
        assert answer.status_code == 404 and "error" in answer.json(), path


def test_read_only(client):
    for path in ("/v1/registry/versions/production", "/v1/registry/versions/v1/promote",
                 "/v1/rollback"):
        assert client.post(path).status_code in (404, 405)


def test_an_unexpected_error_is_still_json(registry):
    calls = []

    def broken(batch):
        calls.append(len(batch))
        if len(calls) > 1:  # the warm-up passes, requests do not
            raise RuntimeError("boom")
        return np.full((len(batch), 10), 0.1)

    def open_broken(version: str, registry: Registry) -> Predictor:
        return Predictor(version, "production", "keras", broken)

    app = create_app(registry, poll_s=POLL_S, open_model=open_broken)
    with TestClient(app, base_url=LOCAL_URL, raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the stand-in model")
        answer = client.post("/v1/predict", json={"instances": mnist_like(1).tolist()})
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error: RuntimeError"}


# --- the model in service ------------------------------------------------------------


def test_follows_the_alias_after_promotion_rollback_and_promote(client, registry, models):
    publish_model(registry, models["b"], accuracy=0.99)  # a new promotion: production -> v2
    wait_until(lambda: served_version(client) == "v2", "v2 after a new promotion")
    registry.rollback()
    wait_until(lambda: served_version(client) == "v1", "v1 after rollback")
    registry.set_alias("production", "v2")
    wait_until(lambda: served_version(client) == "v2", "v2 after promote")
    assert client.get("/readyz").json()["model"]["version"] == "v2"


def test_a_target_that_does_not_verify_is_not_served(client, registry, models, caplog):
    caplog.set_level(logging.WARNING, logger="digits.serving.holder")
    publish_model(registry, models["b"], alias=None)
    with (registry.root / "v2" / "model.keras").open("ab") as model:
        model.write(b"tampered")
    # A writer that skipped verification (or a disk that changed under it) moved the alias.
    replace_file(registry.root / "aliases.json", json.dumps({"production": "v2"}))

    ready = wait_until(
        lambda: (answer := client.get("/readyz").json())["problem"] and answer, "the problem"
    )
    assert ready["ready"] and ready["model"]["version"] == "v1"
    assert re.search(r"production -> v2 not loaded: .*v2/model\.keras.*still serving v1",
                     ready["problem"])
    assert served_version(client) == "v1"
    assert "production -> v2 not loaded" in caplog.text


def test_a_rollback_reuses_the_loaded_model_after_verifying_it(registry, models):
    opened = []

    def counting_open(version, reg):
        opened.append(version)
        return load_predictor(version, reg)

    with serving(registry, open_model=counting_open) as client:
        publish_model(registry, models["b"])
        wait_until(lambda: served_version(client) == "v2", "v2 after a new promotion")
        registry.rollback()
        wait_until(lambda: served_version(client) == "v1", "v1 after rollback")
        assert opened == ["v1", "v2"]  # v1 was kept loaded, not loaded again
        registry.set_alias("production", "v2")
        wait_until(lambda: served_version(client) == "v2", "v2 after promote")
        # Tampered while kept loaded: the next rollback must not bring it back.
        with (registry.root / "v1" / "model.keras").open("ab") as model:
            model.write(b"tampered")
        move_alias_unchecked(registry, "v1")
        wait_until(lambda: client.get("/readyz").json()["problem"], "the problem")
        assert "production -> v1 not loaded" in client.get("/readyz").json()["problem"]
        assert served_version(client) == "v2"


def move_alias_unchecked(registry: Registry, version: str) -> None:
    # `digits rollback` would refuse the tampered target: move the alias file directly.
    replace_file(registry.root / "aliases.json", json.dumps({"production": version}))


def test_not_ready_until_a_model_is_promoted(tmp_path, models):
    registry = Registry(tmp_path / "registry")
    with serving(registry, ready=False) as client:
        assert client.get("/healthz").status_code == 200
        wait_until(lambda: client.get("/readyz").json()["problem"] != "loading", "a first check")
        ready = client.get("/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert "unknown alias 'production'" in ready.json()["problem"]
        answer = client.post("/v1/predict", json={"instances": mnist_like(1).tolist()})
        assert answer.status_code == 503 and "no verified model" in answer.json()["error"]
        assert client.get("/v1/registry/versions").json() == []
        publish_model(registry, models["a"])
        wait_until(lambda: client.get("/readyz").status_code == 200, "the first promotion")


def test_serves_a_pinned_version(registry, models):
    publish_model(registry, models["b"])
    with serving(registry, ref="v1") as client:
        assert client.post("/v1/predict", json={"instances": mnist_like(1).tolist()}).json()[
            "model"
        ] == {"version": "v1", "ref": "v1"}


# --- the page ------------------------------------------------------------------------


def test_page_and_assets_are_served_without_external_urls(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ASSETS:
        asset = client.get("/" if name == "index.html" else f"/static/{name}")
        assert asset.status_code == 200, name
        assert "http://" not in asset.text and "https://" not in asset.text, name
    assert 'src="/static/app.js"' in page.text and 'href="/static/style.css"' in page.text
