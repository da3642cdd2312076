#!/usr/bin/env bash
# Chapter 03's image against a naive single-stage Dockerfile of the same app, in one run:
# cold build, rebuild after a one-line source change, final size; then the final size against
# the release directory plus the runtime base it needs. Prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin="$PWD/target/release/beamops"
work=$(mktemp -d)
tag="bench$$"
cleanup() {
  docker rmi -f "$tag:latest" "$tag-naive:latest" >/dev/null 2>&1 || true
  docker images -q "$tag" | xargs -r docker rmi -f >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cp -r examples/coordination "$work/app"
rm -rf "$work/app/_build" "$work/app/deps" "$work/app/.beamops"
sed -i "s/^  name: coordination$/  name: $tag/; s/^  repository: coordination$/  repository: $tag/" "$work/app/beamops.yaml"
cd "$work/app"
git init -q && git add -A && git -c user.name=bench -c user.email=bench@invalid commit -qm bench
"$bin" up chapter-03 -q >/dev/null   # base images present, Dockerfile rendered

builder=$(sed -n 's/^FROM \(.*\) AS builder$/\1/p' Dockerfile)
cat > Dockerfile.naive <<NAIVE
FROM $builder
ENV MIX_ENV=prod LANG=C.UTF-8
WORKDIR /app
COPY . .
RUN mix release
CMD ["/app/_build/prod/rel/coordination/bin/coordination", "start"]
NAIVE

seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }

ours_cold=$(seconds "$bin" up chapter-03 --no-cache -q)
naive_cold=$(seconds env DOCKER_BUILDKIT=0 docker build --no-cache -f Dockerfile.naive -t "$tag-naive" .)

echo "# one-line change" >> lib/coordination/application.ex
git commit -qam "one-line change"
ours_re=$(seconds "$bin" up chapter-03 -q)
naive_re=$(seconds env DOCKER_BUILDKIT=0 docker build -f Dockerfile.naive -t "$tag-naive" .)

ours_size=$(docker image inspect -f '{{.Size}}' "$tag:latest")
naive_size=$(docker image inspect -f '{{.Size}}' "$tag-naive:latest")
release_size=$(docker run --rm --entrypoint du "$tag:latest" -sb /app | cut -f1)
runner=$(sed -n 's/^FROM \([^ ]*\)$/\1/p' Dockerfile | tail -1)
runner_size=$(docker image inspect -f '{{.Size}}' "$runner")

ratio() { echo "scale=2; $1 / $2" | bc; }
mb() { echo "scale=1; $1 / 1000000" | bc; }
printf '%-34s %10s %10s %8s\n' "" "beamops" "naive" "ratio"
printf '%-34s %9.1fs %9.1fs %7sx\n' "cold build" "$ours_cold" "$naive_cold" "$(ratio "$ours_cold" "$naive_cold")"
printf '%-34s %9.1fs %9.1fs %7sx\n' "rebuild after a one-line change" "$ours_re" "$naive_re" "$(ratio "$ours_re" "$naive_re")"
printf '%-34s %8sMB %8sMB %7sx\n' "final image size" "$(mb "$ours_size")" "$(mb "$naive_size")" "$(ratio "$ours_size" "$naive_size")"
echo "release dir $(mb "$release_size") MB + runtime base $(mb "$runner_size") MB = $(mb $((release_size + runner_size))) MB;" \
  "final image is $(ratio "$ours_size" $((release_size + runner_size)))x that floor"
