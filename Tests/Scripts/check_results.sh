#!/usr/bin/env bash
# Checks Results files: with xarray when Python has it (the factors must be coordinates),
# otherwise `ncdump -h` against the documented schema (Tests/Scripts/results_schema.txt, the
# declarations ResultsFile.swift documents). Usage: check_results.sh RESULTS.nc...
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python3 "$here/check_results.py" "$@"
rc=$?
[ $rc -ne 3 ] && exit $rc
echo "xarray absent: checking ncdump -h against $here/results_schema.txt"
status=0
for f in "$@"; do
  header=$(ncdump -h "$f" | sed -e 's/^[[:space:]]*//') || { echo "$f: ncdump failed"; exit 1; }
  while IFS= read -r line; do
    case "$line" in
      :*) grep -q "^${line} = " <<<"$header" || { echo "$f: missing global attribute ${line#:}"; status=1; } ;;
      *)  grep -qxF "$line" <<<"$header" || { echo "$f: missing declaration: $line"; status=1; } ;;
    esac
  done < "$here/results_schema.txt"
  [ $status -eq 0 ] && echo "$f: ncdump -h matches the documented schema"
done
exit $status
