"""LitServe serving one torch.export program (.pt2), for the comparison (runs in ``.venv-lit``).

    .venv-lit/bin/python benchmarks/litserve_app.py --model mlp.pt --port 8000 \
        --api-path /predictions/mlp_b8 --max-batch-size 8 --batch-timeout 0.005

Input: a JSON list of numbers (one sample); output: its arg-max class, as tsf's and
TorchServe's handler answer.  Batching is LitServe's own (``max_batch_size``, ``batch_timeout``).
"""

from __future__ import annotations

import argparse

import litserve as ls
import torch


class ProgramAPI(ls.LitAPI):
    """One ``torch.export`` program (``.pt2``) on the CPU; batches are stacked samples."""

    def __init__(self, model_path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_path = model_path

    def setup(self, device):
        self.model = torch.export.load(self.model_path).module()

    def decode_request(self, request):
        return torch.tensor(request, dtype=torch.float32)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            if x.dim() == 1:
                return self.model(x.unsqueeze(0)).argmax(dim=1).item()
            return self.model(x).argmax(dim=1).tolist()

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-path", default="/predict")
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout", type=float, default=0.0, help="seconds")
    args = parser.parse_args()
    api = ProgramAPI(args.model, max_batch_size=args.max_batch_size,
                         batch_timeout=args.batch_timeout, api_path=args.api_path)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning",
               generate_client_file=False, num_api_servers=1)


if __name__ == "__main__":
    main()
