# Written by tools/bench/report.py; run: gnuplot -e "term='svg'" plots.gp
if (!exists('term')) term = 'svg'
ext = term eq 'svg' ? 'svg' : 'png'
if (term eq 'svg') set terminal svg size 720,480 dynamic enhanced font 'sans,11'; else set terminal pngcairo size 960,640 enhanced font 'sans,11'
set datafile missing 'NaN'
set key left top box opaque
set grid

set output 'primes_speedup.'.ext
set title 'primes: speed-up against workers (median times)'
set xlabel 'workers'; set ylabel 'speed-up over 1 worker'
set xrange [0.8:2.2]; set yrange [0.8:2.2]; set xtics 1
plot 'primes_speedup.dat' u 1:2 w lines dt 2 lc 'black' t 'ideal', \
  '' u 1:3 w linespoints pt 7 t 'mpx Pool, pipe', \
  '' u 1:4 w linespoints pt 5 t 'mpx Pool, uring', \
  '' u 1:5 w linespoints pt 9 t 'mpx pipeline', \
  '' u 1:6 w linespoints pt 13 t 'Python Pool', \
  '' u 1:7 w points pt 3 ps 2 lc 'black' t '2 pthreads (limit), vs mpx Pool 1 worker'
unset xrange; unset yrange; set xtics autofreq

set output 'throughput.'.ext
set title 'one-way throughput between 2 processes against item size'
set xlabel 'item size (points at 8 B, 64 B, 100 B, 4 KiB, 1 MiB)'; set ylabel 'MB/s of payload'
set logscale xy; set xrange [5:3e6]; set key right bottom
set xtics ('8 B' 8, '64 B' 64, '1 KiB' 1024, '4 KiB' 4096, '64 KiB' 65536, '1 MiB' 1048576)
plot 'throughput.dat' u 1:2 w linespoints pt 7 t 'mpx Queue', \
  '' u 1:3 w linespoints pt 13 t 'Python Queue', \
  '' u 1:4 w points pt 5 ps 1.5 t 'mpx Queue, 1 MiB loans (touched)', \
  '' u 1:5 w points pt 9 ps 1.5 t 'mpx Connection (socketpair)', \
  '' u 1:6 w points pt 11 ps 1.5 t 'Python Connection (socketpair)', \
  '' u 1:7 w points pt 3 ps 2 lc 'black' t 'raw write/read (limit)', \
  '' u 1:8 w points pt 2 ps 2 lc 'gray40' t 'memcpy (limit)'
unset logscale; unset xrange; set xtics autofreq; set key left top

set output 'pool_chunksize.'.ext
set title 'Pool(2).map of x*x: task rate against chunksize'
set xlabel 'chunksize'; set ylabel 'calls/s'
set logscale y; set xrange [-0.5:4.5]
plot 'pool_chunksize.dat' u 1:3:xtic(2) w linespoints pt 7 t 'mpx, pipe', \
  '' u 1:4 w linespoints pt 5 t 'mpx, uring', \
  '' u 1:5 w linespoints pt 13 t 'Python'
unset logscale; unset xrange

set output 'latency.'.ext
set title 'round-trip latency percentiles'
set xlabel 'percentile'; set ylabel 'µs per round trip'
set logscale y; set xrange [-0.5:1.5]; set key outside right top
plot 'latency.dat' u 1:3:xtic(2) w linespoints pt 4 lc 1 dt 1 t 'mpx apply, pipe', \
  'latency.dat' u 1:4 w linespoints pt 5 lc 2 dt 1 t 'mpx apply, uring', \
  'latency.dat' u 1:5 w linespoints pt 6 lc 3 dt 2 t 'Python apply\_async().get()', \
  'latency.dat' u 1:6 w linespoints pt 7 lc 4 dt 1 t 'mpx Queue ping-pong', \
  'latency.dat' u 1:7 w linespoints pt 8 lc 5 dt 2 t 'Python Queue ping-pong', \
  'latency.dat' u 1:8 w linespoints pt 9 lc 6 dt 1 t 'raw socketpair (limit)', \
  'latency.dat' u 1:9 w linespoints pt 10 lc 7 dt 1 t 'mpx manager call, tcp', \
  'latency.dat' u 1:10 w linespoints pt 11 lc 8 dt 1 t 'mpx manager call, unix', \
  'latency.dat' u 1:11 w linespoints pt 12 lc 9 dt 2 t 'Python manager call, tcp', \
  'latency.dat' u 1:12 w linespoints pt 13 lc 10 dt 2 t 'Python manager call, unix'
