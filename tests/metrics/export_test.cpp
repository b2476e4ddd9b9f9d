#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "exposition.hpp"
#include "keymig/base64.hpp"
#include "keymig/metrics/metrics.hpp"
#include "process.hpp"

using keymig::metrics::Metrics;
using keymig::metrics::MetricsError;
using keymig::test::sample;

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  return names;
}

std::string exception_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("the exposition passes promtool check metrics", "[metrics][promtool]") {
  Metrics m;
  keymig::test::touch_every_family(m);
  m.add_rows("public.users", "undecryptable", 2);
  keymig::test::TempDir dir;
  const auto file = dir.path() + "/keymig.prom";
  keymig::test::write_file(file, m.serialize());

  const auto r = keymig::test::run({"promtool", "check", "metrics"}, 60, file);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("keymig_") == std::string::npos);  // promtool names what it dislikes
}

TEST_CASE("the textfile is replaced atomically and parses", "[metrics][textfile]") {
  Metrics m;
  keymig::test::touch_every_family(m);
  keymig::test::TempDir dir;
  const auto file = dir.path() + "/keymig.prom";

  m.write_textfile(file);
  const auto first = keymig::test::read_file(file);
  CHECK(first == m.serialize());
  CHECK(sample(first, R"(keymig_rows_total{outcome="rotated",target="users"})") == 1.0);

  SECTION("a reader never sees half a file while the writer rewrites it") {
    std::atomic<bool> stop{false};
    std::atomic<int> reads{0};
    std::atomic<int> torn{0};
    std::thread reader([&] {
      while (!stop) {
        const auto text = keymig::test::read_file(file);
        // The last family serialized is complete only when the whole file is.
        if (text.empty() || text.back() != '\n' ||
            text.find("keymig_run_in_progress 1") == std::string::npos) {
          ++torn;
        }
        ++reads;
      }
    });
    for (int i = 0; i < 100; ++i) {
      m.add_rows("users", "rotated", 1);
      m.write_textfile(file);
    }
    // Make sure the reader overlapped with the writes at least a little.
    while (reads < 50) std::this_thread::yield();
    stop = true;
    reader.join();
    CHECK(torn == 0);
    CHECK(sample(keymig::test::read_file(file),
                 R"(keymig_rows_total{outcome="rotated",target="users"})") == 101.0);
    // No temp file is left behind for node_exporter to trip over.
    CHECK(list_dir(dir.path()) == std::vector<std::string>{"keymig.prom"});

    const auto r = keymig::test::run({"promtool", "check", "metrics"}, 60, file);
    INFO(r.output);
    CHECK(r.exit_code == 0);
  }
  SECTION("a directory that does not exist is a MetricsError naming the path") {
    const auto missing = dir.path() + "/no/such/dir/keymig.prom";
    CHECK_THROWS_AS(m.write_textfile(missing), MetricsError);
    CHECK(exception_text([&] { m.write_textfile(missing); }).find(missing) != std::string::npos);
  }
}

TEST_CASE("a push reaches a real Pushgateway under job keymig and its target",
          "[metrics][pushgateway]") {
  keymig::test::TempDir dir;
  const int port = keymig::test::free_port();
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  keymig::test::Server gateway(
      {"prometheus-pushgateway", "--web.listen-address=127.0.0.1:" + std::to_string(port),
       "--persistence.file="},
      dir.path() + "/pushgateway.log");
  REQUIRE(keymig::test::wait_until_up(base + "/-/ready", 20));

  Metrics m;
  keymig::test::touch_every_family(m);
  m.add_rows("users", "rotated", 4);
  m.add_rows("admins", "rotated", 9);  // another target: must not travel with this push
  m.push(base, "users");

  const auto scraped = keymig::test::http_get(base + "/metrics");
  INFO(scraped);
  // m recorded two commands (migrate, verify), so its push is grouped by target alone.
  CHECK(sample(scraped,
               R"(keymig_rows_total{instance="",job="keymig",outcome="rotated",target="users"})") ==
        5.0);
  CHECK(scraped.find(R"(target="admins")") == std::string::npos);
  // Unlabelled families are grouped under the target too.
  CHECK(sample(scraped, R"(keymig_run_in_progress{instance="",job="keymig",target="users"})") ==
        1.0);
  CHECK(
      sample(
          scraped,
          R"(keymig_last_run_success{command="migrate",instance="",job="keymig",target="users"})") ==
      1.0);
  CHECK(sample(scraped, R"(push_failure_time_seconds{instance="",job="keymig",target="users"})") ==
        0.0);

  SECTION("a second push replaces the values of the first") {
    m.add_rows("users", "rotated", 10);
    m.push(base + "/", "users");
    CHECK(
        sample(keymig::test::http_get(base + "/metrics"),
               R"(keymig_rows_total{instance="",job="keymig",outcome="rotated",target="users"})") ==
        15.0);
  }
  SECTION("migrate and verify processes push into their own groups and keep both") {
    // The same series may not live in two groups: drop the target-only group first.
    REQUIRE(keymig::test::run({"curl", "-sf", "--max-time", "5", "-X", "DELETE",
                               base + "/metrics/job/keymig/target/users"})
                .exit_code == 0);
    Metrics verify_run;
    verify_run.set_rows_by_key("users", "active", 42);
    verify_run.set_last_success("verify", 1800000100);
    m.push(base, "users", "migrate");
    verify_run.push(base, "users");  // the command it recorded groups it
    const auto scraped_again = keymig::test::http_get(base + "/metrics");
    INFO(scraped_again);
    CHECK(
        sample(
            scraped_again,
            R"(keymig_last_success_timestamp_seconds{command="migrate",instance="",job="keymig",target="users"})") ==
        1700000000.0);
    CHECK(
        sample(
            scraped_again,
            R"(keymig_last_success_timestamp_seconds{command="verify",instance="",job="keymig",target="users"})") ==
        1800000100.0);
    // m's failed verify does not travel in migrate's group.
    CHECK(
        scraped_again.find(
            R"(keymig_last_run_success{command="verify",instance="",job="keymig",target="users"} 0)") ==
        std::string::npos);
    CHECK(
        sample(
            scraped_again,
            R"(keymig_rows_by_key{command="verify",instance="",job="keymig",key="active",target="users"})") ==
        42.0);
  }
  SECTION("a push without a target groups by the one the engine recorded") {
    Metrics failed_run;
    CHECK_THROWS_AS(failed_run.push(base), MetricsError);  // nothing recorded yet
    failed_run.set_target("public.accounts.mfa_secret");
    failed_run.set_last_failure("scan");
    failed_run.push(base);
    CHECK(
        sample(
            keymig::test::http_get(base + "/metrics"),
            R"(keymig_last_run_success{command="scan",instance="",job="keymig",target="public.accounts.mfa_secret"})") ==
        0.0);
  }
  SECTION("two databases' runs on one table name keep their own groups") {
    Metrics app_a;
    Metrics app_b;
    for (auto* run : {&app_a, &app_b}) {
      run->set_target("public.users.mfa_secret");
      run->set_last_success("scan", 1800000000);
    }
    app_a.set_database("app_a");
    app_b.set_database("app b/2");  // not URL-safe: still its own group
    app_a.set_rows_by_key("public.users.mfa_secret", "rolling_0", 7);
    app_b.set_rows_by_key("public.users.mfa_secret", "rolling_0", 0);
    app_a.push(base);
    app_b.push(base);
    const auto both = keymig::test::http_get(base + "/metrics");
    INFO(both);
    CHECK(
        sample(
            both,
            R"(keymig_rows_by_key{command="scan",database="app_a",instance="",job="keymig",key="rolling_0",target="public.users.mfa_secret"})") ==
        7.0);
    CHECK(
        sample(
            both,
            R"(keymig_rows_by_key{command="scan",database="app b/2",instance="",job="keymig",key="rolling_0",target="public.users.mfa_secret"})") ==
        0.0);
  }
  SECTION("a target that is not URL-safe still lands under its own name") {
    m.add_rows("odd/schema.users", "empty", 3);
    m.push(base, "odd/schema.users");
    CHECK(
        sample(
            keymig::test::http_get(base + "/metrics"),
            R"(keymig_rows_total{instance="",job="keymig",outcome="empty",target="odd/schema.users"})") ==
        3.0);
  }
}

TEST_CASE("a failed push is a MetricsError naming the URL and the cause",
          "[metrics][pushgateway]") {
  Metrics m;
  keymig::test::touch_every_family(m);

  SECTION("nothing listening") {
    const std::string url = "http://127.0.0.1:" + std::to_string(keymig::test::free_port());
    const auto message = exception_text([&] { m.push(url, "users"); });
    INFO(message);
    CHECK(message.find(url) != std::string::npos);
    CHECK(message.find("could not connect") != std::string::npos);
    CHECK_THROWS_AS(m.push(url, "users"), MetricsError);

    const auto with_password = "http://ops:s3cr3t@127.0.0.1:" + url.substr(url.rfind(':') + 1);
    const auto hidden = exception_text([&] { m.push(with_password, "users"); });
    INFO(hidden);
    CHECK(hidden.find("could not connect") != std::string::npos);
    CHECK(hidden.find("s3cr3t") == std::string::npos);
  }
  SECTION("a server that refuses the push with an HTTP status") {
    // python3's http.server answers a POST with 501 Unsupported method.
    keymig::test::TempDir dir;
    const int port = keymig::test::free_port();
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    keymig::test::Server server({"python3", "-m", "http.server", "--bind", "127.0.0.1",
                                 "--directory", dir.path(), std::to_string(port)},
                                dir.path() + "/server.log");
    REQUIRE(keymig::test::wait_until_up(url + "/", 20));
    // The server's error page must not reach stdout, which `--json` reserves for its object.
    const auto captured = dir.path() + "/stdout.txt";
    std::fflush(stdout);
    const int saved = ::dup(STDOUT_FILENO);
    const int file = ::open(captured.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(file, STDOUT_FILENO);
    ::close(file);
    const auto message = exception_text([&] { m.push(url, "users"); });
    std::fflush(stdout);
    ::dup2(saved, STDOUT_FILENO);
    ::close(saved);
    INFO(message);
    CHECK(message.find(url) != std::string::npos);
    CHECK(message.find("HTTP status 501") != std::string::npos);
    CHECK(keymig::test::read_file(captured).empty());
  }
  SECTION("a gateway that accepts and never answers is given up after the deadline") {
    keymig::test::TempDir dir;
    const int port = keymig::test::free_port();
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const std::string ready = dir.path() + "/listening";
    keymig::test::Server silent({"python3", "-c",
                                 "import socket, sys, time\n"
                                 "s = socket.socket()\n"
                                 "s.bind(('127.0.0.1', int(sys.argv[1])))\n"
                                 "s.listen(8)\n"
                                 "open(sys.argv[2], 'w').close()\n"
                                 "conns = []\n"
                                 "while True:\n"
                                 "    conns.append(s.accept())\n",
                                 std::to_string(port), ready},
                                dir.path() + "/server.log");
    for (int i = 0; i < 100 && ::access(ready.c_str(), F_OK) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    REQUIRE(::access(ready.c_str(), F_OK) == 0);
    const auto start = std::chrono::steady_clock::now();
    const auto message = exception_text([&] { m.push(url, "users"); });
    const auto waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
    INFO(message);
    CHECK(message.find(url) != std::string::npos);
    CHECK(message.find("no answer within") != std::string::npos);
    CHECK(waited.count() >= Metrics::kPushTimeoutSeconds - 1);
    CHECK(waited.count() < Metrics::kPushTimeoutSeconds + 10);
  }
  SECTION("a malformed URL is a usage error that never repeats the password") {
    const auto message =
        exception_text([&] { m.push("http://ops:s3cr3t@gw:9091/prefix", "users"); });
    INFO(message);
    CHECK(message.find("path") != std::string::npos);
    CHECK(message.find("s3cr3t") == std::string::npos);
    CHECK_THROWS_AS(m.push("ftp://gw:9091", "users"), keymig::UsageError);
    CHECK_THROWS_AS(m.push("127.0.0.1:9091", "users"), keymig::UsageError);
    CHECK_THROWS_AS(m.push("http://gw:99999", "users"), keymig::UsageError);
    CHECK_THROWS_AS(m.push("http://:9091", "users"), keymig::UsageError);
  }
}

TEST_CASE("a Pushgateway password is percent-decoded for the push and never echoed",
          "[metrics][pushgateway]") {
  Metrics m;
  keymig::test::touch_every_family(m);
  keymig::test::TempDir dir;
  const int port = keymig::test::free_port();
  const std::string seen = dir.path() + "/authorization";
  // Answers every request with 200 and keeps the last Authorization header it was sent.
  keymig::test::Server server(
      {"python3", "-c",
       "import http.server, sys\n"
       "class H(http.server.BaseHTTPRequestHandler):\n"
       "    def answer(self):\n"
       "        n = int(self.headers.get('Content-Length') or 0)\n"
       "        self.rfile.read(n)\n"
       "        with open(sys.argv[2], 'w') as f:\n"
       "            f.write(self.headers.get('Authorization') or '')\n"
       "        self.send_response(200)\n"
       "        self.send_header('Content-Length', '0')\n"
       "        self.end_headers()\n"
       "    do_GET = do_POST = do_PUT = answer\n"
       "    def log_message(self, *a):\n"
       "        pass\n"
       "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n",
       std::to_string(port), seen},
      dir.path() + "/server.log");
  const std::string hostport = "127.0.0.1:" + std::to_string(port);
  REQUIRE(keymig::test::wait_until_up("http://" + hostport + "/", 20));

  // user:password as written in the URL -> the Basic credentials curl must send.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"ops:p%2Fss", "ops:p/ss"}, {"ops:p%40ss", "ops:p@ss"}, {"ops:p%3Fss%23", "ops:p?ss#"},
      {"ops:p:ss", "ops:p:ss"},   {"ops:p%25ss", "ops:p%ss"}, {"o%40ps:pass", "o@ps:pass"},
  };
  for (const auto& [userinfo, credentials] : cases) {
    INFO(userinfo);
    m.push("http://" + userinfo + "@" + hostport, "users");
    std::string want = "Basic " + keymig::encode_base64url(credentials);
    for (char& c : want) c = c == '-' ? '+' : c == '_' ? '/' : c;  // Basic: standard alphabet
    const std::string got = keymig::test::read_file(seen);
    CHECK(got == want);
  }
  for (const std::string raw :
       {"ops:s3cr/et", "ops:s3cr?et", "ops:s3cr#et", "ops:s3cr%zzet", "ops:s3cr et"}) {
    INFO(raw);
    const std::string url = "http://" + raw + "@" + hostport;
    const auto message = exception_text([&] { m.push(url, "users"); });
    CHECK(!message.empty());
    CHECK(message.find("s3cr") == std::string::npos);
    CHECK(message.find("et@") == std::string::npos);
  }
}
