#include "push_url.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "keymig/error.hpp"
#include "keymig/metrics/metrics.hpp"

using keymig::metrics::parse_push_url;

namespace {

// The message of the UsageError `url` raises; "" if it parses.
std::string refusal(const std::string& url) {
  try {
    (void)parse_push_url(url);
  } catch (const keymig::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("a Pushgateway URL parses into host, port and decoded credentials", "[push_url]") {
  auto u = parse_push_url("http://127.0.0.1:9091");
  CHECK(u.scheme_host == "http://127.0.0.1");
  CHECK(u.port == "9091");
  CHECK(u.username.empty());
  CHECK(u.password.empty());
  CHECK(u.display == "http://127.0.0.1:9091");

  u = parse_push_url("https://gw.example/");
  CHECK(u.port == "443");
  CHECK(u.display == "https://gw.example:443");

  u = parse_push_url("http://[::1]:9091");
  CHECK(u.scheme_host == "http://[::1]");

  // Every character a password may need, percent-encoded, reaches the gateway decoded.
  for (const auto& [encoded, decoded] :
       std::vector<std::pair<std::string, std::string>>{{"p%40ss", "p@ss"},
                                                        {"pa%2Fss", "pa/ss"},
                                                        {"p%3Fss", "p?ss"},
                                                        {"p%23ss", "p#ss"},
                                                        {"p%3Ass", "p:ss"},
                                                        {"p%25ss", "p%ss"}}) {
    CAPTURE(encoded);
    u = parse_push_url("http://ops:" + encoded + "@gw:9091");
    CHECK(u.username == "ops");
    CHECK(u.password.view() == decoded);
    CHECK(u.display == "http://gw:9091");
  }
  u = parse_push_url("http://o%40ps:x@gw:9091");
  CHECK(u.username == "o@ps");
}

TEST_CASE("a bad Pushgateway URL is refused without quoting a credential", "[push_url]") {
  // Raw '/', '?', '#' and '@' in a password: whatever the parser makes of them, the
  // message must not carry the password or the URL as given.
  for (const std::string password : {"pa/ss", "pa?ss", "pa#ss", "p@ss@", "pa ss", "SEC%zzRET"}) {
    CAPTURE(password);
    const std::string url = "http://ops:" + password + "@gw:9091";
    std::string message = refusal(url);
    if (message.empty()) {
      // Parsed: then the password is not where a hand parser would look for a path.
      const auto u = parse_push_url(url);
      CHECK(u.display.find(password) == std::string::npos);
      continue;
    }
    CHECK(message.find(password) == std::string::npos);
    CHECK(message.find("ops:") == std::string::npos);
    CHECK(message.find("bad Pushgateway URL") != std::string::npos);
  }
  CHECK(refusal("ftp://gw:21").find("scheme must be http or https") != std::string::npos);
  CHECK(refusal("http://gw:9091/prefix").find("a path after host:port") != std::string::npos);
  CHECK(refusal("http://gw:9091/?x=1").find("a query or fragment") != std::string::npos);
  CHECK(refusal("http://ops:secret@gw:9091/prefix").find("secret") == std::string::npos);
  CHECK(refusal("http://gw:99999") != "");
  CHECK(refusal("gw:9091") != "");
  CHECK(refusal("") != "");
}

TEST_CASE("push_gateway_problem is the push's own parser, for check-config", "[push_url]") {
  for (const std::string bad :
       {"gw:9091", "ftp://gw:9091", "http://", "http://:9091", "http://gw:0", "http://gw:65536",
        "http://gw:port", "http://gw:9091/metrics", "http://gw:9091?x", "http://g w:9091",
        "http://ops:s3cr3tpw@gw:bad", "http://[::1:9091", "http://[zz]:9091", "http://g\x01w",
        "http://ops:s3cr3tpw/x@gw:9091"}) {
    INFO(bad);
    const std::string problem = keymig::metrics::push_gateway_problem(bad);
    CHECK_FALSE(problem.empty());
    CHECK(problem.find("s3cr3tpw") == std::string::npos);
  }
  for (const std::string good :
       {"http://gw:9091", "https://gw.monitoring.svc", "http://gw:9091/",
        "http://ops:p%2Fss@gw:9091", "http://ops:p%40ss@gw:9091", "http://ops:p:s%3Fs%23@gw:9091",
        "http://[::1]:9091", "https://10.0.0.1"}) {
    INFO(good);
    CHECK(keymig::metrics::push_gateway_problem(good).empty());
  }
}
