// BullMQ on a Tessera cluster, driven by tests/apps.rs.
//
// Usage: node run.mjs <host:port,...> <normal> <delayed> <repeats>
// Adds <normal> jobs, <delayed> delayed jobs and one repeatable job with
// <repeats> repetitions to a queue whose keys share the hash tag {q}; one
// worker completes them. Each job records its id once in a Redis set from
// inside the processor; the script prints a JSON summary on its last line
// and exits 0 only when every job was completed exactly once.
//
// It prints "added" once every job is queued (the failover test fails the
// queue's shard over then). With TESSERA_APP_FAILOVER=1 a job run again
// after a failover (BullMQ is at-least-once: a completion the old primary
// never acknowledged is retried once its lock expires) is reported, not
// failed; locks are short so such jobs come back within seconds.
import { Queue, Worker, QueueEvents } from "bullmq";
import { Cluster } from "ioredis";

const [nodesArg, normalArg, delayedArg, repeatsArg] = process.argv.slice(2);
const nodes = nodesArg.split(",").map((hp) => {
  const [host, port] = hp.split(":");
  return { host, port: Number(port) };
});
const NORMAL = Number(normalArg);
const DELAYED = Number(delayedArg);
const REPEATS = Number(repeatsArg);
const TOTAL = NORMAL + DELAYED + REPEATS;
const DEADLINE_MS = Number(process.env.TESSERA_APP_DEADLINE_MS || 240000);

const cluster = () =>
  new Cluster(nodes, {
    redisOptions: { maxRetriesPerRequest: null, password: process.env.TESSERA_PW },
    clusterRetryStrategy: () => 100,
    slotsRefreshTimeout: 2000,
  });

const prefix = "{q}";
const conn = cluster();
const queue = new Queue("jobs", { connection: conn, prefix });
const events = new QueueEvents("jobs", { connection: cluster(), prefix });
const started = Date.now();

const seen = new Map(); // job id -> times the processor ran to completion
const byKind = { normal: 0, delayed: 0, repeat: 0 };
const errors = [];
const reruns = [];
const FAILOVER = process.env.TESSERA_APP_FAILOVER === "1";
const lockOpts = FAILOVER ? { lockDuration: 3000, stalledInterval: 1000 } : {};

const worker = new Worker(
  "jobs",
  async (job) => {
    // Record the completion in the store too: a job run twice by two
    // processors (not just reported twice) shows up as SADD answering 0.
    const added = await conn.sadd(`${prefix}:done`, job.id);
    if (added === 0) reruns.push(job.id);
    return job.data.kind;
  },
  { connection: cluster(), prefix, concurrency: 50, drainDelay: 1, ...lockOpts },
);
worker.on("completed", (job) => {
  seen.set(job.id, (seen.get(job.id) || 0) + 1);
  byKind[job.data.kind] += 1;
});
worker.on("failed", (job, err) => errors.push(`failed ${job?.id}: ${err}`));
worker.on("error", (err) => errors.push(`worker error: ${err}`));

async function addAll() {
  const batch = 500;
  for (let i = 0; i < NORMAL; i += batch) {
    const n = Math.min(batch, NORMAL - i);
    await queue.addBulk(
      Array.from({ length: n }, (_, j) => ({
        name: "normal",
        data: { kind: "normal", i: i + j },
        opts: { jobId: `n-${i + j}` },
      })),
    );
  }
  for (let i = 0; i < DELAYED; i++) {
    await queue.add(
      "delayed",
      { kind: "delayed", i },
      { jobId: `d-${i}`, delay: 200 + (i % 20) * 100 },
    );
  }
  if (REPEATS > 0) {
    await queue.add("repeat", { kind: "repeat" }, { repeat: { every: 100, limit: REPEATS } });
  }
}

let exitCode = 1;
try {
  await addAll();
  console.log("added");
  // Done when BullMQ's own record says so. Across a failover that is the
  // truth, not the worker's events: a completion whose reply was an error
  // (NOREPLICAS while the new primary waits for its replica) was applied,
  // only not acknowledged; the worker then retries it, meets "Missing lock" (the
  // completion already removed the lock) and never emits `completed`.
  const completedNow = async () => {
    try {
      return (await queue.getJobCounts("completed")).completed;
    } catch {
      return 0;
    }
  };
  // Across a failover a redelivered repeatable job forks its chain (see
  // below), so the end is when nothing is left to run, not a count.
  const pending = async () => {
    try {
      const c = await queue.getJobCounts("waiting", "active", "delayed");
      return c.waiting + c.active + c.delayed;
    } catch {
      return 1;
    }
  };
  while (Date.now() - started < DEADLINE_MS) {
    const events = byKind.normal + byKind.delayed + byKind.repeat;
    if (!FAILOVER && events >= TOTAL) break;
    if (FAILOVER && (await completedNow()) >= TOTAL && (await pending()) === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // A moment for any duplicate to show itself.
  await new Promise((r) => setTimeout(r, 500));
  const counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed");
  const doneSet = await conn.scard(`${prefix}:done`);
  const twice = [...seen.values()].filter((n) => n > 1).length;
  // A job is redelivered across a failover when its lock expired while
  // the shard had no quorum: its completion then meets "Missing lock", or
  // (its completion refused) the processor runs it again. A redelivered
  // repeatable job schedules its next run again from a later time, so a
  // second chain of runs counts on to the limit (see tests/apps.rs).
  const lockLost = errors.some((e) => e.includes("Missing lock"));
  const repeatRun = (id) => id.startsWith("repeat:");
  const redelivered =
    reruns.some(repeatRun) ||
    errors.some((e) => e.includes("Missing lock") && e.includes("job repeat:"));
  // The completed jobs as BullMQ records them; with FAILOVER these are
  // what is counted, and every completed job the worker emitted no event
  // for must be one a "Missing lock" error names.
  const stored = await queue.getJobs(["completed"], 0, -1);
  const storedKinds = { normal: 0, delayed: 0, repeat: 0 };
  for (const j of stored) storedKinds[j.data.kind] += 1;
  const storedIds = new Set(stored.map((j) => j.id));
  const noEvent = [...storedIds].filter((id) => !seen.has(id));
  const unexplained = noEvent.filter(
    (id) => !errors.some((e) => e.includes("Missing lock") && e.includes(`job ${id}.`)),
  );
  const kinds = FAILOVER ? storedKinds : byKind;
  const distinct = FAILOVER ? storedIds.size : seen.size;
  const repeatsOk =
    kinds.repeat === REPEATS || (FAILOVER && redelivered && kinds.repeat > REPEATS);
  const total = NORMAL + DELAYED + kinds.repeat;
  const summary = {
    expected: TOTAL,
    completed_events: [...seen.values()].reduce((a, b) => a + b, 0),
    distinct,
    by_kind: kinds,
    events_by_kind: byKind,
    no_event: noEvent.slice(0, 10),
    no_event_count: noEvent.length,
    no_event_unexplained: unexplained.length,
    done_set: doneSet,
    twice,
    reruns: reruns.length,
    lock_lost: lockLost,
    repeat_redelivered: redelivered,
    rerun_ids: reruns.slice(0, 10),
    counts,
    errors: errors.slice(0, 10),
    error_count: errors.length,
    ms: Date.now() - started,
  };
  const ok =
    kinds.normal === NORMAL &&
    kinds.delayed === DELAYED &&
    repeatsOk &&
    distinct === total &&
    (FAILOVER ? unexplained.length === 0 : noEvent.length === 0) &&
    twice === 0 &&
    (reruns.length === 0 || FAILOVER) &&
    doneSet === total &&
    counts.completed === total &&
    counts.failed === 0 &&
    counts.waiting === 0 &&
    counts.active === 0 &&
    counts.delayed === 0 &&
    errors.filter((e) => !e.startsWith("worker error")).length === 0;
  console.log(JSON.stringify(summary));
  exitCode = ok ? 0 : 1;
} catch (e) {
  console.log(JSON.stringify({ fatal: String(e && e.stack ? e.stack : e), errors }));
}
await Promise.race([
  Promise.all([worker.close(), queue.close(), events.close()]),
  new Promise((r) => setTimeout(r, 5000)),
]);
process.exit(exitCode);
