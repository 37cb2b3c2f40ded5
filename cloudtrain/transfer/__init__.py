"""What moves between this machine and S3: the code package, tarballs, uploads, downloads and their checksums."""
