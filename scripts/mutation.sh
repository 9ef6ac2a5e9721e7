#!/usr/bin/env bash
# Mutation testing of one pure module with mutmut (configured in pyproject.toml, [tool.mutmut]):
#   scripts/mutation.sh egressportal.core.ipam
# Mutates only that module and runs only the fast unit tests (tests/unit) against each mutant, so a run
# stays within minutes on two cores. Prints the counts and the diff of every surviving mutant; the figures
# and the survivors judged harmless are in docs/MUTATION.md.
set -euo pipefail
cd "$(dirname "$0")/.."
module="${1:?usage: scripts/mutation.sh <dotted.module.name>}"
mutmut=.venv/bin/mutmut
# mutmut keeps results between runs and does not always notice new tests: start clean.
rm -rf mutants
"$mutmut" run "${module}*" > /dev/null 2>&1 || true
"$mutmut" results --all true 2>/dev/null | awk -v m="$module." '
  index($1, m) == 1 { status[$2]++; total++ }
  END {
    killed = status["killed"] + status["timeout"]
    printf "%s: %d mutants, %d killed (%d by timeout), %d survived, %d without tests, %d suspicious: kill rate %.1f%%\n",
      substr(m, 1, length(m) - 1), total, killed, status["timeout"], status["survived"], status["no"],
      status["suspicious"], total ? 100 * killed / total : 0
  }'
"$mutmut" results 2>/dev/null | awk -v m="$module." 'index($1, m) == 1 && $2 != "killed" && $2 != "timeout" { sub(":", "", $1); print $1 }' |
  while read -r name; do
    "$mutmut" show "$name" 2>/dev/null | grep -E '^(# |[-+][^-+])' || true
  done
