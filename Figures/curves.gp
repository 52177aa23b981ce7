# Training curves of one experiment: the total loss and the U-Net's part of it (loss_mask +
# loss_dice, which every configuration has) at the logged steps, mean over seeds, one line per
# configuration.
# Usage: gnuplot -c Figures/curves.gp DATA_DIR EXPERIMENT OUT_DIR
#   reads DATA_DIR/EXPERIMENT_loss.dat, DATA_DIR/EXPERIMENT_unet_loss.dat, DATA_DIR/EXPERIMENT_meta.gp,
#   writes OUT_DIR/EXPERIMENT_curves.png (pngcairo) and OUT_DIR/EXPERIMENT_curves.svg.
datadir = ARG1
exp = ARG2
outdir = ARG3
load sprintf("%s/%s_meta.gp", datadir, exp)
total = sprintf("%s/%s_loss.dat", datadir, exp)
unet = sprintf("%s/%s_unet_loss.dat", datadir, exp)

set datafile missing "?"
set key top right font ",9"
set grid lc rgb "#dddddd"
# Eight colours, then the same colours dashed (the prompts ablation has nine configurations).
set xlabel "optimiser step"
set ylabel "loss"
set xrange [0:*]
set yrange [0:*]
seedtext = nseeds == 1 ? "1 seed" : sprintf("mean over %d seeds", nseeds)

do for [fmt in "png svg"] {
    if (fmt eq "png") {
        set terminal pngcairo size 1100,440 font "DejaVu Sans,10" noenhanced background rgb "white"
    } else {
        set terminal svg size 1100,440 font "DejaVu Sans,10" noenhanced background rgb "white"
    }
    set output sprintf("%s/%s_curves.%s", outdir, exp, fmt)
    set multiplot layout 1,2 title sprintf("%s: training loss (profile %s, %s)", experiment, profile, seedtext)
    set title "total loss"
    plot for [i=2:nconfigs+1] total using 1:i with lines lw 1.5 dt 1 + (i - 2) / 8 title columnhead(i)
    set title "U-Net loss (loss_mask + loss_dice)"
    plot for [i=2:nconfigs+1] unet using 1:i with lines lw 1.5 dt 1 + (i - 2) / 8 title columnhead(i)
    unset multiplot
    unset output
}
