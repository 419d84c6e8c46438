"""Online backup, continuous log archiving and point-in-time restore (see docs/architecture.md,
"Backups and point-in-time restore").

- `stream`: the admin endpoint's `GET /backup` route, which streams a fuzzy snapshot and the
  committed log after it, chunk by chunk, while the server goes on serving;
- `client`: `fastzk backup`, which receives that stream into a backup directory and writes
  its manifest last;
- `archive`: `fastzk.archiveDir`, a copy of every closed log segment and every snapshot,
  made before retention may delete them;
- `pitr`: reading backups, archives and data dirs back as of a zxid or a time (`fastzk
  restore`, `fastzk snap diff`).
"""
