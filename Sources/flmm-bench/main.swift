import CBLAS
print("bench")
