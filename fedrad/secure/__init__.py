"""Keys, certificates, signing and sealing of fedrad, on ``cryptography``.

``certificates``: the study's TLS CA and certificates. ``node_auth``: SuperNode authentication
keys and the coordinator's register of nodes. ``identity``: a site's Ed25519 identity key, the
ServerApp's X25519 sealing key and the server's register of site identities. ``sealing``: model
updates sealed end to end from a site to the ServerApp (the SuperLink relays but cannot read or
alter them).
"""
