"""Tokens stored in a spelling only Python's lenient base64 reads (issue 20, item 2).

pyca/cryptography 48 decodes tokens with CPython's non-strict base64 decoder, so the
platform reads a rolling-key token with a trailing newline, a leading space, '+'/'/' for
'-'/'_', junk after the padding... Such a row needs the rolling key until migrate rewrites
it: scan and verify must say so, migrate must move it (canonical, under the active key,
timestamp kept, the old text journaled exactly), and finalize must not call the rolling
key retirable before. pyca is the judge of what is readable.
"""

import base64
import random
import unittest

from cryptography.fernet import Fernet, InvalidToken

from keymig_testlib import (EXIT_NEEDS_ROLLING, EXIT_OK, EXIT_UNDECRYPTABLE, DbTestCase,
                            Keymig, Secrets, copy_in, current_secrets, drop_db, new_db, psql,
                            USERS_DDL, snapshot, totp_secret, write_config)

COLUMNS = "id, username, mfa_secret, mfa_fernet_active"

NOISE = " \n\t\r\v\f=%+/-_.:*!~\x01\x7f\u00e9"


def mangle(token, rng):
    """One to three edits of the kinds stored text suffers (never a NUL: text can't hold it)."""
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        if kind == 0:  # a noise character anywhere
            at = rng.randrange(len(token) + 1)
            token = token[:at] + rng.choice(NOISE) + token[at:]
        elif kind == 1:  # leading or trailing whitespace
            ws = rng.choice([" ", "\n", "\r\n", "\t", "  "])
            token = ws + token if rng.random() < 0.5 else token + ws
        elif kind == 2:  # junk after the padding
            token += rng.choice(["AAAA", "=", "==", "\n", "x", "%%", " junk"])
        elif kind == 3:  # the standard alphabet
            token = token.replace("-", "+").replace("_", "/")
        elif kind == 4:  # padding dropped
            token = token.rstrip("=")
        elif kind == 5:  # wrapped every n characters
            n = rng.randrange(16, 77)
            token = "\n".join(token[i:i + n] for i in range(0, len(token), n))
        elif kind == 6:  # a character cut out
            at = rng.randrange(len(token))
            token = token[:at] + token[at + 1:]
        else:  # '=' inserted on a 4-character boundary
            at = rng.randrange(len(token) // 4) * 4
            token = token[:at] + "=" + token[at:]
    return token


def pyca_reads(key, text):
    """(plaintext, timestamp) when pyca reads `text` with `key` alone, else None."""
    f = Fernet(key.encode())
    try:
        return f.decrypt(text), f.extract_timestamp(text)
    except (InvalidToken, ValueError):  # ValueError: non-ASCII str, as pyca 48 raises
        return None


def strict_unpadded(text):
    """Canonical base64url without its padding: keymig reads it (as pyca's newer decoder
    does), pyca 48 does not. Left out of both sets, as neither rule is pyca 48's."""
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                       "0123456789-_" for c in text) or len(text) % 4 == 1:
        return False
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=") == text


class LenientSpellingsTest(DbTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = random.Random(2020)
        cls.active = Fernet.generate_key().decode()
        cls.rolling = Fernet.generate_key().decode()
        cls.secrets = Secrets()
        cls.secrets.add_key(cls.active)
        cls.secrets.add_key(cls.rolling)
        cls.config = write_config(cls.tmp, cls.active, [cls.rolling])
        # id -> (text, plaintext, timestamp, key) for the readable ones; text for the rest.
        cls.readable, cls.rejected = {}, {}
        rid = 0
        tries = 0
        while (len(cls.readable) < 2000 or len(cls.rejected) < 400) and tries < 20000:
            tries += 1
            key = cls.rolling if rng.random() < 0.85 else cls.active
            plain = totp_secret(rng, short=rng.random() < 0.3)
            ts = rng.randrange(1_500_000_000, 1_700_000_000)
            token = Fernet(key.encode()).encrypt_at_time(plain.encode(), ts).decode()
            text = mangle(token, rng)
            if text == token or strict_unpadded(text):
                continue
            got = pyca_reads(key, text)
            rid += 1
            cls.secrets.add(token, plain, text)
            if got:
                if len(cls.readable) < 2000:
                    assert got == (plain.encode(), ts)
                    cls.readable[rid] = (text, plain, ts, key)
            elif len(cls.rejected) < 400:
                cls.rejected[rid] = text
        assert len(cls.readable) == 2000 and len(cls.rejected) == 400, tries
        cls.from_rolling = [i for i, v in cls.readable.items() if v[3] == cls.rolling]

    def setUp(self):
        self.dbname = "kmt_lenient"
        self.dsn = new_db(self.dbname)
        psql(self.dsn, USERS_DDL)
        self.km = Keymig(self, self.config, self.dsn, self.secrets)

    def tearDown(self):
        drop_db(self.dbname)

    def load(self, rows):
        copy_in(self.dsn, "public.users", COLUMNS,
                [(rid, "user%06d" % rid, text, False) for rid, text in rows.items()])

    def test_readable_spellings_need_the_rolling_key_until_migrate_moves_them(self):
        self.load({rid: v[0] for rid, v in self.readable.items()})
        original = snapshot(self.dsn)
        scan = self.km.run("scan", "--json", expect=(EXIT_OK, EXIT_NEEDS_ROLLING)).json
        self.assertEqual(scan["undecryptable"], 0, scan.get("undecryptable_by_reason"))
        self.assertEqual(scan["rolling"], len(self.from_rolling))
        verify = self.km.run("verify", "--json", expect=EXIT_NEEDS_ROLLING).json
        self.assertEqual(verify["needs_rolling"], len(self.from_rolling))
        self.assertEqual(verify["undecryptable"], 0)

        run = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.assertEqual(run["undecryptable"], 0)
        # Active-key spellings are written back canonical and counted with the rotated.
        self.assertEqual(run["rotated"], len(self.readable))
        now = current_secrets(self.dsn)
        for rid, (text, plain, ts, key) in self.readable.items():
            token = now[rid][0]
            # The active key alone reads it, in pyca, with the same plaintext and time.
            self.assertTrue(pyca_reads(self.active, token) == (plain.encode(), ts),
                            "row %d not readable by the active key alone" % rid)
            if key == self.rolling:
                self.assertIsNone(pyca_reads(self.rolling, token), "row %d" % rid)
            # Canonical: the one spelling every decoder reads.
            raw = base64.urlsafe_b64decode(token)
            self.assertTrue(base64.urlsafe_b64encode(raw).decode() == token,
                            "row %d not canonical" % rid)
        self.km.run("verify", "--json", "--run", run["run_id"], expect=EXIT_OK)

        # Rollback puts the old text back byte for byte, odd spellings and all.
        self.km.run("rollback", "--json", "--run", run["run_id"], expect=EXIT_OK)
        self.assertTrue(snapshot(self.dsn) == original, "rollback did not restore every row")

        again = self.km.run("migrate", "--json", expect=EXIT_OK).json
        self.km.run("verify", "--json", expect=EXIT_OK)
        final = self.km.run("finalize", "--json", "--run", again["run_id"], expect=EXIT_OK).json
        self.assertTrue(final["rolling_key_retirable"])

    def test_spellings_pyca_rejects_stay_untouched_and_reported(self):
        self.load(self.rejected)
        original = snapshot(self.dsn)
        scan = self.km.run("scan", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(scan["undecryptable"], len(self.rejected))
        run = self.km.run("migrate", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(run["undecryptable"], len(self.rejected))
        self.assertEqual(run["rotated"], 0)
        self.assertTrue(snapshot(self.dsn) == original, "a rejected row was changed")
        verify = self.km.run("verify", "--json", expect=EXIT_UNDECRYPTABLE).json
        self.assertEqual(verify["undecryptable"], len(self.rejected))
        self.assertEqual(verify["needs_rolling"], 0)


if __name__ == "__main__":
    unittest.main()
