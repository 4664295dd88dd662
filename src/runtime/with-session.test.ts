// Sessions are released when the work with them ends, also when it throws.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Graph } from "../graph/ir.js";
import { Session, withSession } from "./session.js";

function tinyGraph(): Graph {
  const g = new Graph("relu");
  g.addInput("x", "float32", [2]);
  g.setOutputs([g.op("Relu", ["x"])]);
  return g;
}

test("withSession and `await using` release the session on return and on a throw", async (t) => {
  let released = 0;
  const release = Session.prototype.release;
  t.mock.method(Session.prototype, "release", async function (this: Session) {
    released++;
    return release.call(this);
  });
  assert.equal(await withSession(tinyGraph(), async (s) => s.outputNames.length), 1);
  assert.equal(released, 1);
  await assert.rejects(
    withSession(tinyGraph(), async () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(released, 2);
  const scoped = async (): Promise<void> => {
    await using s = await Session.create(tinyGraph());
    void s;
    throw new Error("inside");
  };
  await assert.rejects(scoped(), /inside/);
  assert.equal(released, 3);
});
