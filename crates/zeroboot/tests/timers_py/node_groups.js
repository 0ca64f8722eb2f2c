// A detached child (its own session and group) ended by one group kill;
// a timer-driven timeout around a child that does not end.
const cp = require("child_process");
const c = cp.spawn("sh", ["-c", "sleep 30 & sleep 30; wait"], { detached: true });
setTimeout(() => process.kill(-c.pid, "SIGTERM"), 300);
c.on("exit", (code, sig) => {
  console.log("group killed", sig);
  try {
    cp.execSync("sleep 5", { timeout: 300 });
  } catch (e) {
    console.log("execSync timeout", e.code, e.signal);
  }
});
