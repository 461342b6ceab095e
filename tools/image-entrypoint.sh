#!/bin/sh
# The image's entrypoint, which tini runs (the Dockerfile): it runs its arguments, one of the image's
# commands, in its own place (exec: the program is the process tini waits for and signals). What is
# not a command (an option such as --help given to the image, a program's bare name) gets the list of
# the image's programs, not the runtime's "executable file not found", and exit code 2. Only the first
# argument is named: the others may be a program's options, secrets among them, and the usage goes to the
# container's log.
if [ "$#" -gt 0 ] && command -v "$1" >/dev/null 2>&1; then
	exec "$@"
fi
cat >&2 <<USAGE
mdops image: "$1" is not a command of this image. Its programs:
  python -m controller   the Runbook controller (the default command)
  python -m api          the Ops Console REST API
  python -m runner       the runner, in the Job pods of the job executor
  python -m sim          the market-data simulator (demo only)
  mdops                  the command line of the REST API (mdops --help)
Their settings are MDOPS_* environment variables (README: Configuration). For instance:
  podman run --rm IMAGE mdops --help
USAGE
exit 2
