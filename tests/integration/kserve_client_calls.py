"""Calls a server with KServe's own Python client; run by test_kserve.py in ``.venv-kserve``.

KServe's package pins versions the project's environment does not share, so it lives in its own
virtual environment and this script prints what the client saw as one JSON document.
Usage: ``python kserve_client_calls.py BASE_URL MODEL ROWS_JSON``.
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(base_url: str, model: str, rows: list) -> dict:
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", timeout=60))
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    out: dict = {
        "v1_live": await v1.is_server_live(base_url),
        "v1_model_ready": await v1.is_model_ready(base_url, model),
        "v2_live": await v2.is_server_live(base_url),
        "v2_ready": await v2.is_server_ready(base_url),
        "v2_model_ready": await v2.is_model_ready(base_url, model),
    }
    out["v1_predict"] = await v1.infer(base_url, {"instances": rows}, model_name=model)
    tensor = InferInput("input-0", [len(rows), len(rows[0])], "FP32")
    tensor.set_data_from_numpy(np.array(rows, dtype=np.float32), binary_data=False)
    answer = await v2.infer(base_url, InferRequest(model_name=model, infer_inputs=[tensor],
                                                   request_id="kserve-1"), model_name=model)
    out["v2_infer"] = {"model_name": answer.model_name, "id": answer.id,
                       "outputs": [{"name": o.name, "shape": list(o.shape),
                                    "data": o.as_numpy().tolist()} for o in answer.outputs]}
    binary = InferInput("input-0", [len(rows), len(rows[0])], "FP32")
    binary.set_data_from_numpy(np.array(rows, dtype=np.float32), binary_data=True)
    answer = await v2.infer(base_url, InferRequest(model_name=model, infer_inputs=[binary],
                                                   request_id="kserve-2"), model_name=model)
    out["v2_infer_binary"] = [o.as_numpy().tolist() for o in answer.outputs]
    await v1.close()
    await v2.close()
    return out


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
    print(json.dumps(result))
