#!/usr/bin/env bash
# The nightly job: run the A/B suite on the farm, then judge it. Its exit code is the alert (0 ok; 1 a confirmed
# regression, or a config that failed; 2 bad input). Used by devicelab-nightly.service and ci-nightly.yml.
#
#   DEVICELAB_FARM      the scheduler, e.g. tls://scheduler.lab:8786
#   DEVICELAB_DB        the shared store, e.g. postgresql://devicelab@db.lab/devicelab (password from libpq's
#                       environment or ~/.pgpass, never in this URL)
#   REFERENCE_RUNNER    the accepted reference build (after `devicelab accept RUN:candidate`, point this at that
#                       build); CANDIDATE_RUNNER  tonight's build
#   DEVICELAB_TLS_*     optional: CA, certificate and key files for the farm's mutual TLS
#   OUT                 where the JUnit and markdown files go (default: ./nightly-out)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-./nightly-out}
mkdir -p "$out" "$here/builds/reference" "$here/builds/candidate"
cp "${REFERENCE_RUNNER:?set REFERENCE_RUNNER}" "$here/builds/reference/runner"
cp "${CANDIDATE_RUNNER:?set CANDIDATE_RUNNER}" "$here/builds/candidate/runner"
tls=()
if [ -n "${DEVICELAB_TLS_CA:-}" ]; then
    tls=(--tls-ca "$DEVICELAB_TLS_CA" --tls-cert "$DEVICELAB_TLS_CERT" --tls-key "$DEVICELAB_TLS_KEY")
fi
run_status=0
devicelab run --farm "${DEVICELAB_FARM:?set DEVICELAB_FARM}" "${tls[@]}" --suite "$here/suite.yaml" \
    --json > "$out/run.json" || run_status=$?
if [ "$run_status" -ge 2 ]; then
    exit "$run_status"  # bad input: nothing was judged
fi
regress_status=0
devicelab regress --junit "$out/regress.xml" --markdown "$out/regress.md" || regress_status=$?
# A lost phone or a failed config (run exit 1) is an alert too; `devicelab run --resume RUN_ID --farm …` re-runs them.
exit $(( regress_status > run_status ? regress_status : run_status ))
