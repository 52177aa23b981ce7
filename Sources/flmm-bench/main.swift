import CBLAS
print("bench")
try UNetBench.run()
