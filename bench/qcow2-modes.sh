#!/bin/bash
cd /work/wt-qcow2fast/out/bench-qcow2
bi=../../target/release/build-image
N=${N:-7}
declare -A T
for i in $(seq $N); do
  for m in $MODES; do
    rm -f /tmp/qb/$m.qcow2
    s=$(date +%s.%N)
    if [ $m = qemu ]; then qemu-img convert -O qcow2 input.raw /tmp/qb/$m.qcow2; else BUILD_IMAGE_QCOW2_COPY=$m $bi -q convert input.raw --to qcow2 -o /tmp/qb/$m.qcow2; fi
    e=$(date +%s.%N)
    T[$m]+="$(awk "BEGIN{print $e-$s}") "
  done
done
for m in $MODES; do echo "$m $(echo ${T[$m]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END{print "median", a[int((NR+1)/2)]}') : ${T[$m]}"; done
