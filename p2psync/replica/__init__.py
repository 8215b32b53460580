"""The replica: spaces, ACLs, object trees, Automerge documents and their SQLite store."""
