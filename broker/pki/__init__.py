"""The federation's PKI: the CA, broker and site certificates, and reading identities back.

Keeps invariant 5 (identity is the certificate). ``authority`` creates the CA and issues
certificates whose URI SAN names a broker or a site (``spiffe://<trust-domain>/site/<id>``);
``identity`` holds the pure checks the gateway runs on a peer's certificate (which site,
still valid, revoked); ``layout`` is where a PKI directory keeps its files. Only the
``cryptography`` library is used; every failure is an ``errors.PkiError`` (or
``errors.IdentityRefused`` for a refused peer) that says what to do.
"""
