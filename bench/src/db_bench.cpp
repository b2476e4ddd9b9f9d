#include "keymig/bench/db_bench.hpp"

#include <fcntl.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <pqxx/stream_to>
#include <random>
#include <sstream>
#include <tuple>

#include "keymig/crypto/fernet.hpp"
#include "keymig/log.hpp"
#include "keymig/secure.hpp"

extern char** environ;

namespace keymig::bench {
namespace {

using Clock = std::chrono::steady_clock;

// CPU time the whole machine has spent so far (user, nice, system, irq, softirq; not
// idle, iowait or steal), from /proc/stat. On a shared machine wall times vary with
// what else runs; the CPU a side costs varies much less.
double machine_cpu_seconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  unsigned long long user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
  if (!(in >> cpu >> user >> nice >> system >> idle >> iowait >> irq >> softirq) || cpu != "cpu")
    return 0;
  return static_cast<double>(user + nice + system + irq + softirq) /
         static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Rows are generated and copied in chunks so that memory stays bounded at 1M rows.
constexpr std::int64_t kChunkRows = 20'000;

std::string totp_secret(std::mt19937_64& rng) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out(32, 'A');
  for (char& c : out) c = kAlphabet[rng() % 32];
  return out;
}

// The scratch schema and the bench's runs in keymig.runs go, whatever happens.
// A run, or every part of a run over several targets.
std::string delete_run_sql(pqxx::nontransaction& tx, const std::string& run_id) {
  return "DELETE FROM keymig.runs WHERE run_id = " + tx.quote(run_id) +
         " OR run_group = " + tx.quote(run_id);
}

class Scratch {
 public:
  Scratch(pqxx::connection& conn, std::string schema) : conn_(conn), schema_(std::move(schema)) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    try {
      pqxx::nontransaction tx(conn_);
      tx.exec0("DROP SCHEMA IF EXISTS " + tx.quote_name(schema_) + " CASCADE");
      for (const auto& run_id : run_ids_) {
        // journal (a delete trigger) and chunks (ON DELETE CASCADE) go with the run.
        tx.exec0(delete_run_sql(tx, run_id));
      }
    } catch (const std::exception& e) {
      KEYMIG_LOG(warn, "bench", "scratch_cleanup_failed", {"schema", schema_}, {"error", e.what()});
    }
  }
  void add_run(std::string run_id) { run_ids_.push_back(std::move(run_id)); }
  void drop_run(pqxx::nontransaction& tx, const std::string& run_id) {
    tx.exec0(delete_run_sql(tx, run_id));
    run_ids_.erase(std::remove(run_ids_.begin(), run_ids_.end(), run_id), run_ids_.end());
  }

 private:
  pqxx::connection& conn_;
  std::string schema_;
  std::vector<std::string> run_ids_;
};

// The child's config holds the keys: a mode-0600 file in a private directory, wiped and
// removed at the end. Keys never go on argv.
class TempConfig {
 public:
  explicit TempConfig(const SecretString& text) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/keymig-bench-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw DbBenchError("bench db: cannot create a temp directory");
    dir_ = pattern;
    path_ = dir_ + "/values.yaml";
    log_ = dir_ + "/migrate.log";
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw DbBenchError("bench db: cannot write the temp config in " + dir_);
    const bool ok =
        ::write(fd, text.view().data(), text.size()) == static_cast<ssize_t>(text.size());
    ::close(fd);
    if (!ok) throw DbBenchError("bench db: cannot write the temp config in " + dir_);
    size_ = text.size();
  }
  TempConfig(const TempConfig&) = delete;
  TempConfig& operator=(const TempConfig&) = delete;
  ~TempConfig() {
    // Overwrite before unlinking: the file held keys.
    int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      std::string zeros(size_, '\0');
      [[maybe_unused]] auto n = ::write(fd, zeros.data(), zeros.size());
      ::fsync(fd);
      ::close(fd);
    }
    ::unlink(path_.c_str());
    ::unlink(log_.c_str());
    ::rmdir(dir_.c_str());
  }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const std::string& log() const { return log_; }

 private:
  std::string dir_, path_, log_;
  std::size_t size_ = 0;
};

struct Child {
  int status = 0;
  std::string out;
  double seconds = 0;
  std::int64_t maxrss_bytes = 0;
};

// posix_spawn rather than fork: the process has TBB worker threads.
Child run_child(const std::string& exe, const std::vector<std::string>& args,
                const std::string& log) {
  std::array<int, 2> pipefd{};
  if (::pipe2(pipefd.data(), O_CLOEXEC) != 0) throw DbBenchError("bench db: pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipefd[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> argv;
  argv.reserve(args.size() + 2);
  argv.push_back(const_cast<char*>(exe.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  Child child;
  const auto start = Clock::now();
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipefd[1]);
  if (rc != 0) {
    ::close(pipefd[0]);
    throw DbBenchError("bench db: cannot start " + exe + ": " + std::strerror(rc));
  }
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = ::read(pipefd[0], buf.data(), buf.size());
    if (n > 0) {
      child.out.append(buf.data(), static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(pipefd[0]);
  struct rusage usage {};
  while (::wait4(pid, &child.status, 0, &usage) < 0 && errno == EINTR) {
  }
  child.seconds = seconds_since(start);
  child.maxrss_bytes = static_cast<std::int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
  return child;
}

std::string tail_of_file(const std::string& path, std::size_t max_bytes) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return {};
  std::string text;
  std::array<char, 4096> buf{};
  std::size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) text.append(buf.data(), n);
  std::fclose(f);
  return text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void build_source(pqxx::connection& conn, const std::string& q_src, const crypto::Fernet& rolling,
                  std::int64_t rows) {
  std::vector<SecretString> tokens;
  for (std::int64_t first = 0; first < rows; first += kChunkRows) {
    const std::int64_t n = std::min(kChunkRows, rows - first);
    tokens.clear();
    tokens.resize(static_cast<std::size_t>(n));
    tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, 1024),
                      [&](const tbb::blocked_range<std::int64_t>& range) {
                        std::mt19937_64 rng(static_cast<std::uint64_t>(first + range.begin()));
                        for (std::int64_t i = range.begin(); i < range.end(); ++i) {
                          std::string plain = totp_secret(rng);
                          const std::uint64_t ts =
                              1'500'000'000 + static_cast<std::uint64_t>(first + i);
                          tokens[static_cast<std::size_t>(i)] = rolling.encrypt_at_time(plain, ts);
                          secure_wipe(plain.data(), plain.size());
                        }
                      });
    pqxx::work tx(conn);
    // 6.4 pastes the table name into COPY unquoted: q_src is already quoted.
    pqxx::stream_to out(tx, q_src,
                        std::vector<std::string>{"id", "username", "mfa_secret",
                                                 "mfa_fernet_active", "is_staff", "is_superuser"});
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = first + i + 1;
      out << std::make_tuple(id, "bench" + std::to_string(id),
                             std::string(tokens[static_cast<std::size_t>(i)].view()), false,
                             id % 97 == 0, id % 211 == 0);
    }
    out.complete();
    tx.commit();
  }
}

// A fresh, vacuumed copy of the source, so both sides start from the same state.
void fresh_copy(pqxx::connection& conn, const std::string& q_schema, const std::string& table) {
  pqxx::nontransaction tx(conn);
  const std::string q_table = q_schema + "." + tx.quote_name(table);
  tx.exec0("DROP TABLE IF EXISTS " + q_table);
  // Autovacuum off on the scratch tables: both sides leave the same dead rows behind,
  // but keymig commits batch by batch, so the launcher can start a vacuum of the table
  // in the middle of its run and never in the middle of the floor's one statement.
  // Whichever side the launcher happened to land on paid for it (seen: a 200k-row
  // migrate 2.4 s with no vacuum, 3.3 s with one).
  tx.exec0("CREATE TABLE " + q_table + " (LIKE " + q_schema +
           ".src INCLUDING ALL) WITH (autovacuum_enabled = false)");
  tx.exec0("INSERT INTO " + q_table + " SELECT * FROM " + q_schema + ".src");
  tx.exec0("VACUUM (ANALYZE) " + q_table);
  try {
    // Flush dirty pages so that neither side pays for the other's writes. Needs
    // superuser or pg_checkpoint; without it the numbers are only noisier.
    tx.exec0("CHECKPOINT");
  } catch (const pqxx::sql_error&) {
  }
}

// The source split in `k` tables of consecutive ids (users_0 ..), each as fresh_copy makes
// its one.
std::vector<std::string> fresh_slices(pqxx::connection& conn, const std::string& q_schema, int k,
                                      std::int64_t rows) {
  std::vector<std::string> names;
  pqxx::nontransaction tx(conn);
  for (int i = 0; i < k; ++i) {
    const std::string name = "users_" + std::to_string(i);
    const std::string q_table = q_schema + "." + tx.quote_name(name);
    tx.exec0("DROP TABLE IF EXISTS " + q_table);
    tx.exec0("CREATE TABLE " + q_table + " (LIKE " + q_schema +
             ".src INCLUDING ALL) WITH (autovacuum_enabled = false)");
    tx.exec0("INSERT INTO " + q_table + " SELECT * FROM " + q_schema + ".src WHERE id > " +
             std::to_string(rows * i / k) + " AND id <= " + std::to_string(rows * (i + 1) / k));
    tx.exec0("VACUUM (ANALYZE) " + q_table);
    names.push_back(name);
  }
  try {
    tx.exec0("CHECKPOINT");
  } catch (const pqxx::sql_error&) {
  }
  return names;
}

// One timed `UPDATE ... SET secret = secret || ''` over every row, then the table goes.
double time_floor(pqxx::connection& conn, const std::string& q_schema, std::int64_t rows) {
  pqxx::nontransaction tx(conn);
  const auto start = Clock::now();
  const auto r = tx.exec0("UPDATE " + q_schema + ".floor SET mfa_secret = mfa_secret || ''" +
                          " WHERE mfa_secret IS NOT NULL AND mfa_secret <> ''");
  const double seconds = seconds_since(start);
  if (r.affected_rows() != static_cast<std::size_t>(rows))
    throw DbBenchError("bench db: the floor statement updated " +
                       std::to_string(r.affected_rows()) + " rows, expected " +
                       std::to_string(rows));
  tx.exec0("DROP TABLE " + q_schema + ".floor");
  return seconds;
}

SecretString child_config(const crypto::Key& active, const crypto::Key& rolling,
                          const DbBenchOptions& o, const std::vector<std::string>& tables) {
  const SecretString a = active.encode();
  const SecretString r = rolling.encode();
  std::string text;
  text.reserve(1024 + o.dsn.size() * 2);
  text += "secretStore:\n  activeKey: \"";
  text += a.view();
  text += "\"\n  rollingKey: \"";
  text += r.view();
  text += "\"\nkeyMigration:\n  database:\n    dsn: ";
  text += nlohmann::json(o.dsn).dump();  // a JSON string is a YAML double-quoted scalar
  const std::string columns =
      "idColumn: id, secretColumn: mfa_secret, activeFlagColumn: mfa_fernet_active, "
      "usernameColumn: username, sysAdminColumns: [is_staff, is_superuser]}\n";
  if (tables.size() == 1) {
    text += "\n  target: {table: " + nlohmann::json(tables.front()).dump() + ", " + columns;
  } else {
    text += "\n  targets:\n";
    for (const auto& table : tables)
      text += "    - {table: " + nlohmann::json(table).dump() + ", " + columns;
  }
  text += std::string("  journal: ") + (o.journal ? "true" : "false") + "\n";
  return SecretString(std::move(text));
}

std::string resolve_binary(const std::string& path) {
  if (path != "/proc/self/exe") return path;
  std::array<char, 4096> buf{};
  const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<std::size_t>(n)) : path;
}

}  // namespace

DbBenchResult run_db_bench(const DbBenchOptions& o) {
  if (o.rows < 1) throw UsageError("bench db: --rows must be at least 1");
  if (o.repeat < 1) throw UsageError("bench db: --repeat must be at least 1");
  if (o.threads < 0) throw UsageError("bench db: --threads must not be negative");
  if (o.batch_size < 0) throw UsageError("bench db: --batch-size must not be negative");
  if (o.targets < 1 || o.targets > 64) throw UsageError("bench db: --targets must be 1-64");
  if (o.targets > o.rows) throw UsageError("bench db: --targets must not exceed --rows");
  const std::string exe = resolve_binary(o.keymig_binary);
  if (::access(exe.c_str(), X_OK) != 0) throw UsageError("bench db: cannot run " + exe);

  DbBenchResult result;
  result.rows = o.rows;
  result.targets = o.targets;
  result.scratch_schema = "keymig_bench_" + std::to_string(::getpid());

  std::unique_ptr<pqxx::connection> conn;
  try {
    conn = std::make_unique<pqxx::connection>(o.dsn);
  } catch (const pqxx::broken_connection& e) {
    throw DbBenchError(std::string("bench db: cannot connect: ") + e.what());
  }

  try {
    const std::string q_schema = conn->quote_name(result.scratch_schema);
    {
      pqxx::nontransaction tx(*conn);
      tx.exec0("DROP SCHEMA IF EXISTS " + q_schema + " CASCADE");
    }
    Scratch scratch(*conn, result.scratch_schema);
    {
      pqxx::nontransaction tx(*conn);
      tx.exec0("CREATE SCHEMA " + q_schema);
      tx.exec0(
          "CREATE TABLE " + q_schema +
          ".src (id bigint PRIMARY KEY, username text NOT NULL, mfa_secret text,"
          " mfa_fernet_active boolean NOT NULL DEFAULT false,"
          " is_staff boolean NOT NULL DEFAULT false, is_superuser boolean NOT NULL DEFAULT false)"
          " WITH (autovacuum_enabled = false)");
    }
    crypto::Key active = crypto::Key::generate();
    crypto::Key rolling_key = crypto::Key::generate();
    const SecretString config_text =
        child_config(active, rolling_key, o, {result.scratch_schema + ".users"});
    std::vector<std::string> slice_tables;
    for (int i = 0; i < o.targets; ++i)
      slice_tables.push_back(result.scratch_schema + ".users_" + std::to_string(i));
    const SecretString targets_text = child_config(active, rolling_key, o, slice_tables);
    const crypto::Fernet rolling(std::move(rolling_key));

    const auto setup_start = Clock::now();
    build_source(*conn, q_schema + ".src", rolling, o.rows);
    result.setup_seconds = seconds_since(setup_start);
    KEYMIG_LOG(info, "bench", "db_source_built", {"rows", o.rows},
               {"seconds", result.setup_seconds});

    const TempConfig config(config_text);
    const TempConfig targets_config(targets_text);
    auto migrate_args = [&](const TempConfig& c) {
      std::vector<std::string> args = {"migrate", "--config",    c.path(),
                                       "--json",  "--log-level", "warn"};
      if (o.threads > 0) args.insert(args.end(), {"--threads", std::to_string(o.threads)});
      if (o.batch_size > 0) args.insert(args.end(), {"--batch-size", std::to_string(o.batch_size)});
      return args;
    };
    // One timed migrate child; its run id (a run over several targets: the group's).
    auto timed_migrate = [&](const TempConfig& c, double& cpu_seconds) {
      const double cpu_before = machine_cpu_seconds();
      const Child child = run_child(exe, migrate_args(c), c.log());
      cpu_seconds = machine_cpu_seconds() - cpu_before;
      std::string run_id;
      std::int64_t rotated = -1;
      try {
        const auto summary = nlohmann::json::parse(child.out);
        if (summary.value("run_id", nlohmann::json()).is_string())
          run_id = summary["run_id"].get<std::string>();
        rotated = summary.value("rotated", std::int64_t{-1});
      } catch (const nlohmann::json::exception&) {
      }
      if (!run_id.empty()) scratch.add_run(run_id);
      if (!WIFEXITED(child.status) || WEXITSTATUS(child.status) != 0 || rotated != o.rows)
        throw DbBenchError(
            "bench db: keymig migrate " +
            (WIFEXITED(child.status) ? "exited " + std::to_string(WEXITSTATUS(child.status))
                                     : std::string("was killed")) +
            " having rotated " + std::to_string(rotated) + " of " + std::to_string(o.rows) +
            " rows; its log ends with: " + tail_of_file(c.log(), 600));
      return std::make_pair(child, run_id);
    };

    for (int i = 0; i < o.repeat; ++i) {
      DbBenchSample sample;
      fresh_copy(*conn, q_schema, "users");
      // migrate's stderr carries ids, counts and fingerprints only (DESIGN section 2).
      const auto [child, run_id] = timed_migrate(config, sample.migrate_cpu_seconds);
      sample.migrate_seconds = child.seconds;
      sample.peak_rss_bytes = child.maxrss_bytes;
      {
        pqxx::nontransaction tx(*conn);
        tx.exec0("DROP TABLE " + q_schema + ".users");
        // Every sample's migrate starts from an empty journal, as a rotation does after the
        // last one was finalized: without this, each repeat inserted beside the rows of
        // all the repeats before it. The vacuum is the one autovacuum would otherwise
        // start, at a moment of its choosing, in the middle of a later measurement.
        scratch.drop_run(tx, run_id);
        tx.exec0("VACUUM keymig.journal");
      }
      if (o.targets > 1) {
        // The same rows in `targets` tables, as one run: what several targets cost over one.
        const auto tables = fresh_slices(*conn, q_schema, o.targets, o.rows);
        double cpu = 0;
        const auto [several, group] = timed_migrate(targets_config, cpu);
        sample.targets_migrate_seconds = several.seconds;
        pqxx::nontransaction tx(*conn);
        for (const auto& t : tables) tx.exec0("DROP TABLE " + q_schema + "." + tx.quote_name(t));
        scratch.drop_run(tx, group);
        tx.exec0("VACUUM keymig.journal");
      }

      // The floor runs in a session of its own, as keymig's sessions and an operator's
      // psql are new. The session that just copied the rows has already faulted the
      // buffer pool's pages into its address space, which takes about a third off the
      // same UPDATE there; that figure is reported beside it, not used for the ratio.
      fresh_copy(*conn, q_schema, "floor");
      {
        pqxx::connection fresh(o.dsn);
        const double cpu_before = machine_cpu_seconds();
        sample.floor_seconds = time_floor(fresh, q_schema, o.rows);
        sample.floor_cpu_seconds = machine_cpu_seconds() - cpu_before;
      }
      fresh_copy(*conn, q_schema, "floor");
      sample.floor_warm_seconds = time_floor(*conn, q_schema, o.rows);
      KEYMIG_LOG(info, "bench", "db_sample", {"repeat", i + 1},
                 {"migrate_seconds", sample.migrate_seconds},
                 {"floor_seconds", sample.floor_seconds},
                 {"floor_warm_seconds", sample.floor_warm_seconds},
                 {"peak_rss_bytes", sample.peak_rss_bytes});
      result.samples.push_back(sample);
    }
  } catch (const pqxx::failure& e) {
    throw DbBenchError(std::string("bench db: database error: ") + e.what());
  }

  std::vector<double> migrate, floor, floor_warm, migrate_cpu, floor_cpu, several;
  for (const auto& s : result.samples) {
    several.push_back(s.targets_migrate_seconds);
    migrate.push_back(s.migrate_seconds);
    floor.push_back(s.floor_seconds);
    floor_warm.push_back(s.floor_warm_seconds);
    migrate_cpu.push_back(s.migrate_cpu_seconds);
    floor_cpu.push_back(s.floor_cpu_seconds);
    // The worst sample: a peak is what an operator must provision for.
    result.peak_rss_bytes = std::max(result.peak_rss_bytes, s.peak_rss_bytes);
  }
  result.migrate_seconds = median(migrate);
  if (o.targets > 1) {
    result.targets_migrate_seconds = median(several);
    result.targets_ratio =
        result.migrate_seconds > 0 ? result.targets_migrate_seconds / result.migrate_seconds : 0;
  }
  result.floor_seconds = median(floor);
  result.floor_warm_seconds = median(floor_warm);
  result.migrate_cpu_seconds = median(migrate_cpu);
  result.floor_cpu_seconds = median(floor_cpu);
  result.ratio = result.floor_seconds > 0 ? result.migrate_seconds / result.floor_seconds : 0;
  result.ratio_warm =
      result.floor_warm_seconds > 0 ? result.migrate_seconds / result.floor_warm_seconds : 0;
  return result;
}

std::string db_bench_json(const DbBenchResult& r) {
  nlohmann::json samples = nlohmann::json::array();
  for (const auto& s : r.samples)
    samples.push_back({{"migrate_seconds", s.migrate_seconds},
                       {"floor_seconds", s.floor_seconds},
                       {"floor_warm_seconds", s.floor_warm_seconds},
                       {"migrate_cpu_seconds", s.migrate_cpu_seconds},
                       {"floor_cpu_seconds", s.floor_cpu_seconds},
                       {"peak_rss_bytes", s.peak_rss_bytes},
                       {"targets_migrate_seconds", s.targets_migrate_seconds}});
  nlohmann::json j = {{"rows", r.rows},
                      {"migrate_seconds", r.migrate_seconds},
                      {"floor_seconds", r.floor_seconds},
                      {"ratio", r.ratio},
                      {"floor_warm_seconds", r.floor_warm_seconds},
                      {"ratio_warm", r.ratio_warm},
                      {"migrate_cpu_seconds", r.migrate_cpu_seconds},
                      {"floor_cpu_seconds", r.floor_cpu_seconds},
                      {"peak_rss_bytes", r.peak_rss_bytes},
                      {"rows_per_second", r.migrate_seconds > 0 ? r.rows / r.migrate_seconds : 0.0},
                      {"setup_seconds", r.setup_seconds},
                      {"samples", samples}};
  if (r.targets > 1) {
    j["targets"] = r.targets;
    j["targets_migrate_seconds"] = r.targets_migrate_seconds;
    j["targets_ratio"] = r.targets_ratio;
    j["targets_ratio_to_floor"] =
        r.floor_seconds > 0 ? r.targets_migrate_seconds / r.floor_seconds : 0.0;
  }
  return j.dump();
}

std::string db_bench_text(const DbBenchResult& r) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line,
                "bench db: %lld rows under a rolling key (built in %.2f s), median of %zu\n",
                static_cast<long long>(r.rows), r.setup_seconds, r.samples.size());
  out << line;
  std::snprintf(line, sizeof line, "  keymig migrate  %8.3f s  %10.0f rows/s  peak RSS %.1f MiB\n",
                r.migrate_seconds, r.migrate_seconds > 0 ? r.rows / r.migrate_seconds : 0.0,
                static_cast<double>(r.peak_rss_bytes) / (1024.0 * 1024.0));
  out << line;
  if (r.targets > 1) {
    std::snprintf(line, sizeof line,
                  "  %d targets       %8.3f s  %10.0f rows/s  (%.2f x one target of all rows)\n",
                  r.targets, r.targets_migrate_seconds,
                  r.targets_migrate_seconds > 0 ? r.rows / r.targets_migrate_seconds : 0.0,
                  r.targets_ratio);
    out << line;
  }
  std::snprintf(line, sizeof line, "  floor (UPDATE)  %8.3f s  %10.0f rows/s\n", r.floor_seconds,
                r.floor_seconds > 0 ? r.rows / r.floor_seconds : 0.0);
  out << line;
  std::snprintf(line, sizeof line, "  ratio           %8.2f x the floor\n", r.ratio);
  out << line;
  std::snprintf(line, sizeof line,
                "  (floor in the session that copied the rows: %.3f s, ratio %.2f)\n",
                r.floor_warm_seconds, r.ratio_warm);
  out << line;
  std::snprintf(line, sizeof line,
                "  machine CPU      migrate %.2f s, floor %.2f s (all processes, %ld cores)\n",
                r.migrate_cpu_seconds, r.floor_cpu_seconds, ::sysconf(_SC_NPROCESSORS_ONLN));
  out << line;
  return out.str();
}

}  // namespace keymig::bench
