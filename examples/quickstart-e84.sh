#!/usr/bin/env bash
# Keyword spotting for the Infineon PSOC Edge E84 (Arm Ethos-U55 NPU): edgeship quantizes the model,
# lowers it to integer TFLite, compiles it with Arm Vela (pip install 'edgeship[tflite]'), checks it
# under LiteRT against float, and packages the firmware files for a TensorFlow Lite Micro build.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "make the example models and data (deterministic, no downloads)"
python3 examples/make_all.py

step "build examples/kws/pipeline-psoc.yaml for infineon-psoc-edge-e84"
edgeship build examples/kws/pipeline-psoc.yaml -o out

step "what Vela says (inference time, SRAM, flash) beside edgeship's roofline"
python3 - <<'PY'
import json
report = json.load(open("out/kws-psoc/report.json"))["stages"]
lower, estimate = report["lower"], report["estimate"]
memory = lower["memory"]
print(f"  Vela {lower['version']} {lower['options']['accelerator_config']} @ {lower['core_clock_hz'] / 1e6:.0f} MHz "
      f"({lower['options']['system_config']}): {lower['cycles']} cycles = {lower['latency_ms']:.3f} ms, "
      f"NPU ops {lower['operators']['npu']}, CPU ops {lower['operators']['cpu']}")
print(f"  SRAM {memory['sram_kb']:.1f} KB, flash {memory['off_chip_flash_kb'] + memory['on_chip_flash_kb']:.1f} KB; "
      f"roofline estimate {estimate['roofline_latency_ms']:.3f} ms")
print(f"  LiteRT vs float: {report['validate']['accuracy']['primary']}")
PY

step "firmware files (copy model_data.cc/.h into your ModusToolbox ML / TFLM project)"
ls -l out/kws-psoc/model_data.cc out/kws-psoc/model_data.h out/kws-psoc/model_vela.tflite out/kws-psoc/model.tflite
echo "  $(pwd)/out/kws-psoc/"
