#!/usr/bin/env bash
# Build the MovieLens-1M dataset folders from the raw catalogue in ../shared/data/ml1m-raw
# (interactions, an item table with free text, posters), with `fitmm data prepare`:
#   datasets/ml1m      text features from title, genres and the DBpedia abstract; poster features
#   datasets/ml1m-llm  the same, with the text features of the generated description instead
# Both use the random per-user split with seed 999 and keep every interaction (every user has at
# least 17 and every movie at least 10, so any k-core up to 10 changes nothing). A rebuild gives
# byte-identical files; the per-item feature caches make it take seconds.
#   bash experiments/prepare_ml1m.sh [RAW_FOLDER]
set -euo pipefail
raw="${1:-../shared/data/ml1m-raw}"
common=(--interactions "$raw/interactions.csv" --item-col movie_id --items "$raw/items.csv" --item-id-col movie_id
        --images "$raw/posters" --k-core 0 --split random --seed 999)
fitmm data prepare "${common[@]}" --text-fields title,genres,abstract --out datasets/ml1m
if [ ! -e datasets/ml1m-llm ] && [ -d datasets/ml1m/.feature_cache ]; then
    mkdir -p datasets/ml1m-llm  # reuse the poster features already encoded
    cp -r datasets/ml1m/.feature_cache datasets/ml1m-llm/
fi
fitmm data prepare "${common[@]}" --text-fields llm_description --out datasets/ml1m-llm
