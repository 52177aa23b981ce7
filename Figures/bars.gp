# Bar chart of one experiment: the U-Net and the SAM mask's mIoU and cIoU (percent, all val
# phrases) per configuration, mean ± sample standard deviation over seeds (no bar where a mask
# does not exist, e.g. SAM for the U-Net-only row).
# Usage: gnuplot -c Figures/bars.gp DATA_DIR EXPERIMENT OUT_DIR
#   reads DATA_DIR/EXPERIMENT_bars.dat and DATA_DIR/EXPERIMENT_meta.gp (from `flmm results export`),
#   writes OUT_DIR/EXPERIMENT_bars.png (pngcairo) and OUT_DIR/EXPERIMENT_bars.svg.
datadir = ARG1
exp = ARG2
outdir = ARG3
load sprintf("%s/%s_meta.gp", datadir, exp)
file = sprintf("%s/%s_bars.dat", datadir, exp)

set datafile missing "?"
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border rgb "#333333"
set boxwidth 0.9
set errorbars 0.5
set yrange [0:100]
set ytics 0, 20, 100
set grid ytics lc rgb "#dddddd"
set key top right horizontal
set xtics nomirror rotate by -30 scale 0
set ylabel "% (mean ± std over seeds)"
set xlabel xlabel
seedtext = nseeds == 1 ? "1 seed" : sprintf("%d seeds", nseeds)

do for [fmt in "png svg"] {
    if (fmt eq "png") {
        set terminal pngcairo size 1100,480 font "DejaVu Sans,10" noenhanced background rgb "white"
    } else {
        set terminal svg size 1100,480 font "DejaVu Sans,10" noenhanced background rgb "white"
    }
    set output sprintf("%s/%s_bars.%s", outdir, exp, fmt)
    set multiplot layout 1,2 title sprintf("%s: %s (profile %s, %s)", experiment, title, profile, seedtext)
    set title "mIoU"
    plot file using 3:4:xtic(2) title "U-Net" lc rgb "#5e81ac", \
         ''   using 7:8 title "SAM" lc rgb "#d08770"
    set title "cIoU"
    plot file using 5:6:xtic(2) title "U-Net" lc rgb "#5e81ac", \
         ''   using 9:10 title "SAM" lc rgb "#d08770"
    unset multiplot
    unset output
}
