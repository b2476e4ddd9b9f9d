"""Independent Fernet oracle for tests/crypto/interop_test.cpp (pyca/cryptography).

Usage: fernet_oracle.py MODE INPUT.json OUTPUT.json
Inputs and outputs are JSON files, so that no key or token appears on a command line.
Byte strings are hex. Modes:
  encrypt       {"key", "plaintexts": [hex]}            -> {"tokens": [str]}
  decrypt       {"key", "tokens": [str]}                -> {"plaintexts": [hex or null],
                                                            "timestamps": [int or null]}
  check_rotated {"old_key", "new_key", "tokens": [str]} -> per token: "new_ok",
                "old_ok", "rotated_ok" (MultiFernet([new, old]) and MultiFernet([old]) ...)
"""

import json
import sys

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def try_decrypt(fernet, token):
    try:
        return fernet.decrypt(token)
    except (InvalidToken, ValueError):
        # ValueError: a non-ASCII str token, as cryptography 48 raises it.
        return None


def try_timestamp(fernet, token):
    try:
        return fernet.extract_timestamp(token)
    except (InvalidToken, ValueError):
        return None


def main():
    mode, in_path, out_path = sys.argv[1:4]
    with open(in_path, encoding="utf-8") as f:
        data = json.load(f)
    if mode == "encrypt":
        fernet = Fernet(data["key"])
        out = {"tokens": [fernet.encrypt(bytes.fromhex(p)).decode("ascii")
                          for p in data["plaintexts"]]}
    elif mode == "decrypt":
        fernet = Fernet(data["key"])
        plaintexts, timestamps = [], []
        for token in data["tokens"]:
            plain = try_decrypt(fernet, token)
            plaintexts.append(None if plain is None else plain.hex())
            timestamps.append(None if plain is None else try_timestamp(fernet, token))
        out = {"plaintexts": plaintexts, "timestamps": timestamps}
    elif mode == "check_rotated":
        new, old = Fernet(data["new_key"]), Fernet(data["old_key"])
        out = {"results": []}
        for token in data["tokens"]:
            out["results"].append({
                "new_ok": try_decrypt(new, token) is not None,
                "old_ok": try_decrypt(MultiFernet([old]), token) is not None,
                "both_ok": try_decrypt(MultiFernet([new, old]), token) is not None,
                "timestamp": try_timestamp(new, token),
            })
    else:
        raise SystemExit(f"unknown mode {mode}")
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
