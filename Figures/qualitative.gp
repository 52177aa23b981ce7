# Qualitative panel: one row per val phrase, [image | merged attention (mean over layers and
# heads, on the LMM grid) | U-Net mask | SAM mask | ground truth], masks shown over the dimmed
# image (U-Net magenta, SAM white, ground truth green).
# Usage: gnuplot -c Figures/qualitative.gp DATA_DIR OUT_DIR
#   reads DATA_DIR/qualitative_panels.gp, DATA_DIR/qualitative_<i>.dat and
#   DATA_DIR/qualitative_<i>_attention.dat (from `flmm results export Results/qualitative.nc`),
#   writes OUT_DIR/qualitative.png (pngcairo) and OUT_DIR/qualitative.svg.
datadir = ARG1
outdir = ARG2
load sprintf("%s/qualitative_panels.gp", datadir)

set size ratio -1
unset key
unset tics
unset border
unset colorbox
set cbrange [0:1]
set palette defined (0 "#440154", 0.25 "#3b528b", 0.5 "#21918c", 0.75 "#5ec962", 1 "#fde725")
set lmargin 1
set rmargin 1
set tmargin 2
set bmargin 1

do for [fmt in "png svg"] {
    if (fmt eq "png") {
        set terminal pngcairo size 1100,(230*npanels+30) font "DejaVu Sans,9" noenhanced background rgb "white"
    } else {
        set terminal svg size 1100,(230*npanels+30) font "DejaVu Sans,9" noenhanced background rgb "white"
    }
    set output sprintf("%s/qualitative.%s", outdir, fmt)
    set multiplot layout npanels,5
    do for [i=1:npanels] {
        f = sprintf("%s/qualitative_%d.dat", datadir, i)
        h = value(sprintf("height_%d", i))
        w = value(sprintf("width_%d", i))
        set xrange [-0.5:w-0.5]
        set yrange [-0.5:h-0.5]
        set title value(sprintf("phrase_%d", i))
        plot f using 1:2:3:4:5 with rgbimage
        gh = value(sprintf("gh_%d", i))
        gw = value(sprintf("gw_%d", i))
        set xrange [-0.5:gw-0.5]
        set yrange [-0.5:gh-0.5]
        set title "attention (layers, heads mean)"
        plot sprintf("%s/qualitative_%d_attention.dat", datadir, i) matrix with image
        set xrange [-0.5:w-0.5]
        set yrange [-0.5:h-0.5]
        set title sprintf("U-Net  IoU %.3f", value(sprintf("iou_unet_%d", i)))
        plot f using 1:2:6:7:8 with rgbimage
        if (value(sprintf("has_sam_%d", i))) {
            set title sprintf("SAM  IoU %.3f", value(sprintf("iou_sam_%d", i)))
        } else {
            set title "SAM: no refiner"
        }
        plot f using 1:2:9:10:11 with rgbimage
        set title "ground truth"
        plot f using 1:2:12:13:14 with rgbimage
    }
    unset multiplot
    unset output
}
