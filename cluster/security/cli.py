"""``smartgate certs`` and ``smartgate token``: a site's certificates and tokens.

::

    smartgate certs init DIR                        the site CA (DIR/ca.pem, DIR/ca.key)
    smartgate certs server DIR --host gate.example --host 10.0.0.5
    smartgate certs device DIR cam-north-1          DIR/devices/cam-north-1.pem/.key
    smartgate certs platform DIR county             DIR/platforms/county.pem/.key
    smartgate token keygen FILE                     FILE (signing key) and FILE.pub
    smartgate token issue --key FILE --scope operator --community c1 --subject ops-1 --ttl 8h
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.security import certs, tokens


def cmd_certs(args: argparse.Namespace) -> int:
    what = args.certs_command
    if what == "init":
        issued = certs.init_ca(args.dir, days=args.days or certs.CA_DAYS)
    elif what == "server":
        issued = certs.issue_server(args.dir, args.hosts or [], days=args.days or certs.LEAF_DAYS)
    elif what == "device":
        issued = certs.issue_device(args.dir, args.id, days=args.days or certs.LEAF_DAYS)
    else:
        issued = certs.issue_platform(args.dir, args.name, days=args.days or certs.LEAF_DAYS)
    print(f"certificate {issued.cert}\nkey         {issued.key} (mode 0600)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    if args.token_command == "keygen":
        public, kid = tokens.keygen(args.file)
        print(f"signing key {args.file} (mode 0600; keep it with whoever issues tokens)")
        print(f"public key  {public} (kid {kid}; add it to the node's security.token_keys)")
        return 0
    token = tokens.issue(
        tokens.load_signing_key(args.key),
        subject=args.subject,
        scopes=args.scopes,
        communities=args.communities or [],
        gates=args.gates or [],
        ttl_s=tokens.parse_ttl(args.ttl),
    )
    print(token)
    return 0


def add_commands(sub: Any) -> None:
    """Add ``certs`` and ``token`` to the ``smartgate`` sub-command parsers ``sub``."""
    from pathlib import Path

    c = sub.add_parser("certs", help="a local CA with server, device and platform certificates")
    csub = c.add_subparsers(dest="certs_command", required=True)
    init = csub.add_parser("init", help="create the site CA in DIR")
    server = csub.add_parser("server", help="the node's certificate (loopback + --host names)")
    device = csub.add_parser("device", help="a capture device's client certificate")
    platform = csub.add_parser("platform", help="a platform's client certificate")
    for p in (init, server, device, platform):
        p.add_argument("dir", type=Path, help="the site's certificate folder")
        p.add_argument("--days", type=int, help="validity in days")
        p.set_defaults(func=cmd_certs)
    server.add_argument("--host", action="append", dest="hosts", help="DNS name or IP (repeat)")
    device.add_argument("id", help="device id (also its certificate's CN and SAN URI)")
    platform.add_argument("name")

    t = sub.add_parser("token", help="signing keys and signed, expiring platform tokens")
    tsub = t.add_subparsers(dest="token_command", required=True)
    keygen = tsub.add_parser("keygen", help="a new Ed25519 signing key FILE and FILE.pub")
    keygen.add_argument("file", type=Path)
    keygen.set_defaults(func=cmd_token)
    issue = tsub.add_parser("issue", help="print a signed token")
    issue.add_argument("--key", type=Path, required=True, help="signing key (token keygen)")
    issue.add_argument(
        "--scope", action="append", dest="scopes", required=True, choices=tokens.SCOPES
    )
    issue.add_argument("--community", action="append", dest="communities")
    issue.add_argument("--gate", action="append", dest="gates", help="gate tokens: its gates")
    issue.add_argument("--subject", required=True, help="who holds it: ops-1, county, cam-7")
    issue.add_argument("--ttl", default="8h", help="time to live: 90s, 15m, 8h, 30d")
    issue.set_defaults(func=cmd_token)
