public enum FormatsModule {}
