print("flmm")
