"""Build random-weight FunASR model directories through FunASR's own classes.

No machine here reaches a model hub, so tests and benchmarks run FunASR's real loading and decoding
code on directories this script writes: `config.yaml`, `tokens.json`, `am.mvn`, `configuration.json`
and `model.pt` (a plain state_dict). FunASR builds the random weights itself from the config
(`AutoModel` on a directory with no `model.pt` yet), deterministically under its seed; the script then
saves them, so later loads go through the normal path. Random weights transcribe gibberish but cost
exactly the compute of the real model, which is what `--full` is for (benchmarks).

    python -m tools.funasr_models --out .cache/funasr-tiny
    python -m tools.funasr_models --out .cache/funasr-full --full --which paraformer-streaming sensevoice
    python -m tools.funasr_models --export-onnx .cache/funasr-full/paraformer-streaming  (make funasr-onnx)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

KINDS = ("paraformer-streaming", "paraformer", "ct-punc", "sensevoice")

# SenseVoice writes its language, emotion and event as leading special tokens; the tiny vocabulary
# carries them so generated models can emit them too
SENSEVOICE_TAGS = [
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>",
    "<|Speech|>", "<|BGM|>", "<|Laughter|>", "<|Applause|>", "<|woitn|>", "<|withitn|>",
]  # fmt: skip
PUNC_LIST = ["<unk>", "_", "，", "。", "？", "、"]  # noqa: RUF001  (ct-punc's own list)


def _chars(n: int) -> list[str]:
    """n distinct CJK ideographs, then made-up tokens once the block runs out (full-size vocabularies)."""
    block = [chr(0x4E00 + i) for i in range(min(n, 20992))]
    return block + [f"tok{i}" for i in range(n - len(block))]


def asr_tokens(vocab: int, extra: list[str] | None = None) -> list[str]:
    # FunASR's layout: <blank> <s> </s> first, <unk> last
    extra = extra or []
    return ["<blank>", "<s>", "</s>", *extra, *_chars(vocab - 4 - len(extra)), "<unk>"]


def _frontend(online: bool) -> tuple[str, dict[str, Any]]:
    conf = {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25, "frame_shift": 10}
    return ("WavFrontendOnline" if online else "WavFrontend"), {**conf, "lfr_m": 7, "lfr_n": 6}


def _sanm_encoder(size: int, heads: int, ffn: int, blocks: int, input_layer: str) -> dict[str, Any]:
    return {
        "output_size": size,
        "attention_heads": heads,
        "linear_units": ffn,
        "num_blocks": blocks,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": input_layer,
        "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True,
        "kernel_size": 11,
        "sanm_shfit": 0,
        "selfattention_layer_type": "sanm",
    }


def _paraformer(full: bool, online: bool) -> tuple[dict[str, Any], list[str]]:
    size, heads, ffn, enc_blocks, dec_blocks, vocab = (512, 4, 2048, 50, 16, 8404) if full else (64, 2, 128, 2, 1, 300)
    encoder = _sanm_encoder(size, heads, ffn, enc_blocks, "pe_online" if online else "pe")
    if online:  # the published streaming model's chunking (paraformer-zh-streaming config.yaml)
        encoder |= {
            "chunk_size": [12, 15],
            "stride": [8, 10],
            "pad_left": [0, 0],
            "encoder_att_look_back_factor": [4, 4],
            "decoder_att_look_back_factor": [1, 1],
        }
    frontend, frontend_conf = _frontend(online)
    config = {
        "model": "ParaformerStreaming" if online else "Paraformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
        },
        "encoder": "SANMEncoderChunkOpt" if online else "SANMEncoder",
        "encoder_conf": encoder,
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": heads,
            "linear_units": ffn,
            "num_blocks": dec_blocks,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "att_layer_num": dec_blocks,
            "kernel_size": 11,
            "sanm_shfit": 5 if online else 0,
        },
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": size, "threshold": 1.0, "l_order": 1, "r_order": 1, "tail_threshold": 0.45},
        "frontend": frontend,
        "frontend_conf": frontend_conf,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }
    return config, asr_tokens(vocab)


def _sensevoice(full: bool) -> tuple[dict[str, Any], list[str]]:
    # SenseVoiceSmall: 50 SANM blocks (the last 20 are its "tp" blocks), 512 dims, vocab 25055
    size, heads, ffn, blocks, tp, vocab = (512, 4, 2048, 50, 20, 25055) if full else (64, 2, 128, 2, 1, 300)
    encoder = _sanm_encoder(size, heads, ffn, blocks, "pe") | {"tp_blocks": tp}
    frontend, frontend_conf = _frontend(online=False)
    config = {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": encoder,
        "frontend": frontend,
        "frontend_conf": frontend_conf,
        # the real model uses a sentencepiece vocabulary; a character one costs the same compute
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }
    return config, asr_tokens(vocab, SENSEVOICE_TAGS)


def _ct_punc(full: bool) -> tuple[dict[str, Any], list[str]]:
    # punc_ct-transformer_zh-cn-common-vocab272727: 4 SANM blocks of 256 over a 272727-word embedding
    size, heads, ffn, blocks, vocab = (256, 8, 1024, 4, 272727) if full else (64, 2, 128, 1, 300)
    encoder = _sanm_encoder(size, heads, ffn, blocks, "pe") | {"input_size": size, "padding_idx": 0}
    encoder["attention_dropout_rate"] = 0.0
    config = {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": size,
            "att_unit": size,
            "dropout_rate": 0.1,
            "punc_list": PUNC_LIST,
            "punc_weight": [1.0] * len(PUNC_LIST),
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": encoder,
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>"},
    }
    return config, ["<blank>", "<s>", "</s>", *_chars(vocab - 4), "<unk>"]


def _write_cmvn(path: Path, dim: int = 560) -> None:
    """Kaldi nnet text with <AddShift> and <Rescale> (FunASR's am.mvn); identity-ish, deterministic."""
    shift = " ".join(["-8.0"] * dim)
    scale = " ".join(["0.25"] * dim)
    path.write_text(
        "<Nnet>\n"
        f"<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n"
        "</Nnet>\n"
    )


def build(kind: str, out: Path, full: bool = False, seed: int = 0) -> Path:
    """Write one model directory and return it; an existing complete one is kept as is."""
    if (out / "model.pt").is_file():
        return out
    builders = {
        "paraformer-streaming": lambda: _paraformer(full, online=True),
        "paraformer": lambda: _paraformer(full, online=False),
        "ct-punc": lambda: _ct_punc(full),
        "sensevoice": lambda: _sensevoice(full),
    }
    config, tokens = builders[kind]()
    out.mkdir(parents=True, exist_ok=True)
    metas: dict[str, Any] = {"init_param": "model.pt", "config": "config.yaml"}
    metas["tokenizer_conf"] = {"token_list": "tokens.json"}
    if "frontend" in config:
        _write_cmvn(out / "am.mvn")
        metas["frontend_conf"] = {"cmvn_file": "am.mvn"}
    (out / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False))
    (out / "config.yaml").write_text(json.dumps(config, ensure_ascii=False, indent=2))  # JSON is YAML
    (out / "configuration.json").write_text(
        json.dumps({"framework": "pytorch", "task": kind, "file_path_metas": metas}, indent=2)
    )
    import torch
    from funasr import AutoModel

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    with contextlib.redirect_stdout(io.StringIO()):  # FunASR prints its version and notices
        # no model.pt yet: FunASR builds the network from config.yaml with seeded random weights
        model = AutoModel(model=str(out), disable_update=True, device="cpu", ncpu=1, seed=seed, disable_pbar=True)
    root.handlers[:], root.level = saved
    tmp = out / "model.pt.tmp"
    torch.save(model.model.state_dict(), tmp)
    tmp.rename(out / "model.pt")  # last: a directory with model.pt is complete
    return out


def build_all(out: Path, full: bool = False, which: tuple[str, ...] = KINDS) -> dict[str, Path]:
    return {kind: build(kind, out / kind, full) for kind in which}


def export_onnx(model_dir: Path, int8: bool = True) -> list[Path]:
    """paraformer-streaming's ONNX files exported beside `model_dir` (fp32, then int8), as the first
    `--asr-runtime onnx` start would: what `--asr-runtime auto` looks for. Current files are kept."""
    from hark.server.asr.funasr_load import load_model
    from hark.server.asr.paraformer_batch import CHUNK_SIZE, DECODER_LOOK_BACK, ENCODER_LOOK_BACK
    from hark.server.asr.paraformer_onnx_export import STAGES, ensure_exported

    model = load_model(str(model_dir), "--asr-model", 1)
    paths = []
    for quantized in (False, True) if int8 else (False,):
        files = ensure_exported(model, CHUNK_SIZE, ENCODER_LOOK_BACK, DECODER_LOOK_BACK, quantized)
        paths += [files.path(stage) for stage in STAGES]
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.funasr_models", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory to write one sub-directory per model into")
    p.add_argument("--full", action="store_true", help="the published full-size architectures (for benchmarks)")
    p.add_argument("--which", nargs="+", choices=KINDS, default=list(KINDS), help="models to build (default all)")
    p.add_argument(
        "--export-onnx",
        type=Path,
        metavar="MODEL_DIR",
        help="then export this paraformer-streaming model directory (built here or downloaded) to ONNX beside "
        "it, fp32 and int8: `--asr-runtime auto` then runs onnx",
    )
    args = p.parse_args(argv)
    if args.out is None and args.export_onnx is None:
        p.error("--out or --export-onnx is required")
    if args.out is not None:
        for kind, path in build_all(args.out, args.full, tuple(args.which)).items():
            size = (path / "model.pt").stat().st_size / 2**20
            print(f"{kind}: {path} ({size:.1f} MiB)", file=sys.stderr)
    if args.export_onnx is not None:
        for path in export_onnx(args.export_onnx):
            print(f"onnx: {path} ({path.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
