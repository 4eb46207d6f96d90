# No provider: this module is arithmetic over its inputs and the measured
# per-process figures in bench/results/capacity.json, and renders the node
# configs as text. It runs anywhere Terraform or OpenTofu 1.6 or newer runs
# (`terraform test` / `tofu test`), with nothing to download.
terraform {
  required_version = ">= 1.6.0"
}
