public enum NNModule {}
