"""Everything that runs at a hospital and decides what leaves it, in one place.

A hospital's security reviewer reads this package as one whole:

- :mod:`fedrad.site.policy` — the site's privacy contract (``[policy]`` of ``site.toml``);
- :mod:`fedrad.site.approval` — studies the site approved, pinned by a canonical hash;
- :mod:`fedrad.site.secret` and :mod:`fedrad.site.splits` — the site's secret, which seeds its
  noise and fixes its train/held-out split;
- :mod:`fedrad.site.release` — the one release path every reply passes;
- :mod:`fedrad.site.cohort` — the SecAgg+ cohort and threshold check;
- :mod:`fedrad.site.refusal` — errors leave as short codes, details stay in the site's log;
- :mod:`fedrad.site.client_app` — the Flower ClientApp whose handlers use all of the above.

Below them, the site also runs :mod:`fedrad.federation.egress` (its egress log),
:mod:`fedrad.federation.sealing` (end-to-end sealing), :mod:`fedrad.federation.secagg_client`
(Flower's SecAgg+), :mod:`fedrad.federation.site_privacy` and :mod:`fedrad.privacy` (DP-SGD,
its accountant and the ledger), and :mod:`fedrad.federation.site_data` (its features and split).
"""
