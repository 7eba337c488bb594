#!/usr/bin/env bash
# Checks that a binary runs on every x86-64 CPU: every function holding AVX instructions (VEX/EVEX
# encoded: mnemonics v…, registers ymm/zmm) must belong to AlignKernelsAVX2, the one module compiled
# for Haswell, which the engine calls only on CPUs with AVX2, FMA and F16C (KernelSet.swift). What it
# catches: code of a baseline module built for another target, and the subtler case of a generic
# specialization or other shared-linkage function that both AlignKernelsAVX2 and a baseline module
# emit, where the linker may keep the AVX2 module's copy for everyone.
#
#   scripts/check-baseline-code.sh BINARY...
#
# Allowed besides AlignKernelsAVX2 (mangled `16AlignKernelsAVX2`): BoringSSL (in swift-crypto and
# swift-nio-ssl), which checks the CPU itself before using AVX — symbols carrying its CCryptoBoringSSL /
# CNIOBoringSSL prefix, its assembly's GFMUL and _aesni_ctr32_* and its static keccak_f_x4. Exits 1 naming the functions
# otherwise; 0 on non-x86-64 machines (nothing to check).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: check-baseline-code.sh BINARY..." >&2; exit 2; }
[[ "$(uname -m)" == x86_64 ]] || { echo "check-baseline-code.sh: not x86-64, nothing to check" >&2; exit 0; }
command -v objdump >/dev/null || { echo "check-baseline-code.sh: objdump missing (apt-get install binutils)" >&2; exit 2; }
ALLOWED='^[^[:space:]]*16AlignKernelsAVX2|^[^[:space:]]*(CCryptoBoringSSL|CNIOBoringSSL)|^GFMUL[[:space:]]|^_ZL11keccak_f_x4|^_aesni_ctr32_'
status=0
for binary in "$@"; do
  [[ -f "$binary" ]] || { echo "check-baseline-code.sh: no such file: $binary" >&2; exit 2; }
  # Function label lines look like `0000000000401000 <name>:`; instruction lines carry a tab before
  # the mnemonic. Print each function with AVX instructions once, with one example instruction.
  offenders="$(objdump -d --no-show-raw-insn "$binary" | awk '
    /^[0-9a-f]+ <.*>:$/ { fn = substr($2, 2, length($2) - 3); reported = 0; next }
    reported || fn == "" { next }
    {
      split($0, parts, "\t")
      insn = parts[2]
      if (insn ~ /^v[a-z]/ || insn ~ /%[yz]mm/) { print fn "\t" insn; reported = 1 }
    }' | grep -v -E "$ALLOWED" || true)"
  if [[ -n "$offenders" ]]; then
    echo "check-baseline-code.sh: $binary: functions outside AlignKernelsAVX2 use AVX instructions (function, first such instruction):" >&2
    echo "$offenders" | head -40 >&2
    echo "   ($(echo "$offenders" | wc -l) functions)" >&2
    status=1
  else
    echo "   $binary: AVX only in AlignKernelsAVX2 ($(objdump -d --no-show-raw-insn "$binary" | grep -c '16AlignKernelsAVX2.*>:$' || true) functions there)" >&2
  fi
done
exit $status
