"""File transfer intake: SFTP logins, the SFTP server and the import worker."""
