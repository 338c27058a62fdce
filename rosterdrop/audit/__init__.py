"""The append-only audit log: logins, bans, uploads, downloads and admin changes."""
