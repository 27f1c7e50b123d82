"""A node's replica on local disk (--data-dir): the SQLite file (`disk`), the journal that writes
every change of the store to it in group commits on a thread of its own (`journal`), and the
writes that wait for it before they are acknowledged (`writes`)."""
