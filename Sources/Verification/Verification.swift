public enum VerificationModule {}
