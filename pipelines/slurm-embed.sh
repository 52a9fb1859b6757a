#!/bin/bash
# Embed a catalog on a SLURM cluster without Dask: one array task per tile.
#
#     N=$(astroembed info --catalog CAT --tiles | wc -l)
#     sbatch --array=0-$((N - 1)) --export=ALL,CATALOG=CAT pipelines/slurm-embed.sh
#     astroembed info --catalog CAT      # afterwards: complete, or the tiles still missing
#
# Task K embeds the K-th tile (0-based) of `astroembed info --catalog CAT --tiles` with
# `astroembed embed --tile`; tasks run side by side, each rewriting only its own tile. A
# failed task is resubmitted alone (--array=K); tiles already embedded with the same model
# are skipped. Settings from the environment: CATALOG (required), ASTROEMBED (the command,
# default `astroembed`: e.g. the virtualenv's .venv/bin/astroembed), EMBED_OPTIONS (more
# options for embed, e.g. "--model mymodel-onnx --name v2").
#SBATCH --job-name=astroembed-embed
#SBATCH --cpus-per-task=4
#SBATCH --time=01:00:00
#SBATCH --output=astroembed-embed-%A_%a.log
set -euo pipefail

: "${CATALOG:?set CATALOG to the catalog directory}"
: "${SLURM_ARRAY_TASK_ID:?submit as an array job: sbatch --array=0-N ...}"
ASTROEMBED=${ASTROEMBED:-astroembed}

tiles=$("$ASTROEMBED" -q info --catalog "$CATALOG" --tiles)
tile=$(printf '%s\n' "$tiles" | sed -n "$((SLURM_ARRAY_TASK_ID + 1))p")
if [ -z "$tile" ]; then
    echo "error: array task $SLURM_ARRAY_TASK_ID: $CATALOG has $(printf '%s\n' "$tiles" | grep -c .) tiles (0-based task ids)" >&2
    exit 2
fi
# EMBED_OPTIONS is split into words on purpose: it holds several options.
# shellcheck disable=SC2086
exec "$ASTROEMBED" embed --catalog "$CATALOG" --tile "$tile" \
    --threads "${SLURM_CPUS_PER_TASK:-1}" ${EMBED_OPTIONS:-}
