#include "keymig/redact.hpp"

#include <catch2/catch.hpp>
#include <string>

namespace {

// A real Fernet token and key (made by Python's cryptography for this test; the key is
// used nowhere else).
const std::string kToken =
    "gAAAAABmMi7AAy-Tq0TtO2eYNDK96yhrGC-"
    "UbE5LruwvN3Y5tOQBoCQt58zeT6umIL2EvK1DTlTOtOZMlz6hUlr9o5ZaBjcOgC"
    "2qjqpmnuCo6tb8H5uowjk=";
const std::string kKey = "8CaxWushT-2Vg9IQ9nfDu05RF8MVfadMuG6g6G88ZCc=";

}  // namespace

TEST_CASE("a token in a server message is redacted wherever it sits", "[common][redact]") {
  using keymig::scrub_tokens;
  CHECK(scrub_tokens("ERROR:  bad secret " + kToken) == "ERROR:  bad secret [redacted token]");
  CHECK(scrub_tokens("x=" + kToken + ",y") == "x=[redacted token],y");
  CHECK(scrub_tokens("(" + kToken + ")") == "([redacted token])");
  // Cut short (a varchar too small) or in the standard alphabet: still a token.
  CHECK(scrub_tokens("value too long: " + kToken.substr(0, 20)) ==
        "value too long: [redacted token]");
  std::string standard = kToken;
  for (char& c : standard) c = c == '-' ? '+' : c == '_' ? '/' : c;
  CHECK(scrub_tokens("'" + standard + "'") == "'[redacted token]'");
  // Long base64 without the prefix (a token whose first bytes were cut off).
  CHECK(scrub_tokens("v " + kToken.substr(10) + " w") == "v [redacted token] w");
}

TEST_CASE("a key in a message is redacted, padded or not, and as hex", "[common][redact]") {
  using keymig::scrub_tokens;
  CHECK(scrub_tokens("key " + kKey + " bad") == "key [redacted key] bad");
  CHECK(scrub_tokens("key " + kKey.substr(0, 43)) == "key [redacted key]");
  // An '=' before more base64 is no padding: `--option=KEY` still shows a key.
  CHECK(scrub_tokens("argument --frob=" + kKey) == "argument --frob=[redacted key]");
  CHECK(scrub_tokens("a=b=" + kKey + "=x") == "a=b=[redacted key]=x");
  CHECK(scrub_tokens(std::string(32, 'a') + std::string(32, '0')) == "[redacted key]");
}

TEST_CASE("ordinary messages keep every word", "[common][redact]") {
  using keymig::scrub_tokens;
  for (const std::string text :
       {"duplicate key value violates unique constraint \"users_pkey\" (SQLSTATE 23505)",
        "could not open file \"/var/lib/postgresql/15/main/base/16384/2619_fsm_with_a_long_name\"",
        "relation public.users_with_a_rather_long_but_ordinary_identifier does not exist",
        "run m-1a2b3c4d: lock timeout", "", "gAAA"})
    CHECK(scrub_tokens(text) == text);
}

TEST_CASE("a secret is removed from a message, however often it appears", "[common][redact]") {
  using keymig::remove_secret;
  CHECK(remove_secret("a SECRET b SECRETSECRET", "SECRET") ==
        "a [redacted] b [redacted][redacted]");
  CHECK(remove_secret("nothing here", "SECRET") == "nothing here");
  CHECK(remove_secret("a b", "a") == "a b");  // too short to be told from text
  CHECK(remove_secret("x [redacted]", "redacted") == "x [[redacted]]");
}

TEST_CASE("the quoted parts of a libpq message are redacted", "[common][redact]") {
  using keymig::strip_quoted;
  CHECK(strip_quoted("invalid percent-encoded token: \"SEC%zzRET\"") ==
        "invalid percent-encoded token: [redacted]");
  CHECK(strip_quoted("missing \"=\" after \"RET\" in connection info string") ==
        "missing \"=\" after [redacted] in connection info string");
  CHECK(strip_quoted("unterminated \"postgresql://u:p@[::1") == "unterminated [redacted]");
  CHECK(strip_quoted("no quotes") == "no quotes");
}

TEST_CASE("control characters in a name are shown as escapes", "[common][redact]") {
  using keymig::escape_control;
  CHECK(escape_control("alice") == "alice");
  CHECK(escape_control("evil\x1b[2J\nroot") == "evil\\x1b[2J\\nroot");
  CHECK(escape_control("a\tb\rc\x7f") == "a\\tb\\rc\\x7f");
  CHECK(escape_control("back\\slash") == "back\\\\slash");
  CHECK(escape_control("Jos\xc3\xa9") == "Jos\xc3\xa9");  // UTF-8 stays
  CHECK(escape_control("\xc2\x9b"
                       "31m") == "\\xc2\\x9b31m");  // C1 CSI
  CHECK(escape_control("bad\xff") == "bad\\xff");
  CHECK(escape_control(std::string("nul\0x", 5)) == "nul\\x00x");
}
