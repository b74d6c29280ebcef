"""Running the retrain flow under the test harness, and reading back what the API recorded."""

from prefect.client.orchestration import get_client

FAST = {"model": "mlp", "train_overrides": {"epochs": 3}, "min_train_rows": 1000}


def run_flow(**params):
    from flows.retrain import retrain

    return retrain(**{**FAST, **params}, return_state=True)


def read_flow_run(state):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def read_task_runs(state):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
