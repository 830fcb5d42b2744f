# bench/plot.gp: one bar chart, one bar per gateway.  report.py calls it as
#
#   gnuplot -e "datafile='rate.dat'; outfile='rate.png'; \
#               charttitle='...'; yaxis='...'; subtitle='...'" bench/plot.gp
#
# Each line of datafile: "label" value "value as printed" colour(0xRRGGBB
# written in decimal).  Missing measurements are simply absent.

if (!exists("subtitle")) subtitle = ""
set terminal pngcairo size 800,500 enhanced font "Sans,11"
set output outfile
set title charttitle . (strlen(subtitle) ? "\n{/*0.8 " . subtitle . "}" : "")
set ylabel yaxis
set yrange [0:*]
set offsets 0.5, 0.5, graph 0.12, 0
set style fill solid 0.85 border rgb "#404040"
set boxwidth 0.6
set grid ytics lc rgb "#d0d0d0"
set border 3
set xtics nomirror scale 0
set ytics nomirror
set format y "%.0f"
if (exists("yfmt")) set format y yfmt
unset key
plot datafile using 0:2:4:xtic(1) with boxes lc rgb variable, \
     "" using 0:2:3 with labels offset 0,0.8 font "Sans,10"
