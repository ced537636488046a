#!/bin/bash
# Log the CPU time of running `pairflow train --recipe` processes every 30 s, for
# benchmarks/bpd_per_cpu_hour.py --cpu-log: lines "UNIX_TIME PID TICKS recipes/NAME"
# (TICKS = utime + stime of /proc/PID/stat, in clock ticks: each process its own, summed by
# bpd_per_cpu_hour.py, so a wrapper does not count its children's time again) and
# "UNIX_TIME load L1 L5 L15". Usage:  bash benchmarks/cpu_log.sh > cpu_log.txt &
while true; do
  for pid in $(pgrep -f "pairflow train --recipe"); do
    if [ -r "/proc/$pid/stat" ]; then
      ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
      recipe=$(tr '\0' ' ' < "/proc/$pid/cmdline" | grep -o 'recipes/[A-Za-z0-9_-]*')
      echo "$(date +%s.%N) $pid $ticks $recipe"
    fi
  done
  echo "$(date +%s.%N) load $(cut -d' ' -f1-3 /proc/loadavg)"
  sleep 30
done
