#!/usr/bin/env bash
# tunekit quickstart: check the bundled dataset, pack it, LoRA-SFT a tiny model, generate from it.
# About a minute or two on a laptop CPU; nothing is downloaded. Run from anywhere, as often as you like:
#
#   uv run bash examples/quickstart.sh [OUT_DIR]      # default OUT_DIR: runs/quickstart
#
# Each run starts the demo afresh: it replaces the OUT_DIR that an earlier quickstart wrote (marked by
# a .tunekit-quickstart file), and refuses any other existing OUT_DIR rather than delete a user's data.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/quickstart}
marker="$out/.tunekit-quickstart"

# What earlier quickstarts wrote before the marker existed: exactly packed/ and sft-lora/.
written_by_quickstart() {
    [[ -f "$marker" ]] && return 0
    local names=() path
    for path in "$out"/* "$out"/.[!.]*; do
        [[ -e "$path" ]] && names+=("${path##*/}")
    done
    [[ "${names[*]-}" == "packed sft-lora" || "${names[*]-}" == "packed" ]]
}

if [[ -e "$out" ]]; then
    if [[ -d "$out" ]] && written_by_quickstart; then
        echo "== 0. starting afresh: removing the previous quickstart's $out"
        rm -rf -- "$out"
    else
        echo "error: $out exists and was not written by the quickstart; pass another OUT_DIR" >&2
        exit 2
    fi
fi
mkdir -p "$out"
touch "$marker"
where=$(cd "$out" && pwd)

echo "== 1. check: every Nova/Bedrock rule, file:line:field for each problem"
ds check examples/data/sft.jsonl

echo "== 2. pack: chat template, exact loss masks, global best-fit-decreasing packing"
ds pack examples/data/sft.jsonl --tokenizer examples/tiny/tokenizer --max-length 256 -o "$out/packed"

echo "== 3. train: the seed's LoRA SFT recipe on a tiny Llama built from a config"
train run examples/recipes/sft-lora-tiny.yaml --output-dir "$out/sft-lora"

echo "== 4. generate from the trained adapter"
train generate "$out/sft-lora" --greedy --system "Answer with one word." --prompt "What is the opposite of wet?"

echo "== done: the packed data is in $where/packed, the run (adapter in final/) in $where/sft-lora"
echo "   its record: train status $where/sft-lora; running the quickstart again starts it afresh"
