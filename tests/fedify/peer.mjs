// An independent ActivityPub server for Capsule's federation tests: the
// Fedify library serving one actor, "fred", on 127.0.0.1 over plain http.
// Fedify checks HTTP signatures for real: an unsigned or badly signed POST
// to its inbox is refused. The test drives it through /control/* (JSON)
// and reads what its inbox accepted from /control/events.
//
// Prints "ready http://127.0.0.1:PORT" once it listens.
import http from "node:http";
import {
  Accept,
  Announce,
  Like,
  Create,
  Delete,
  Endpoints,
  Follow,
  Mention,
  Note,
  Person,
  PUBLIC_COLLECTION,
  Undo,
  Update,
  createFederation,
  generateCryptoKeyPair,
  MemoryKvStore,
} from "@fedify/fedify";

const federation = createFederation({
  kv: new MemoryKvStore(),
  allowPrivateAddress: true,
});
const keys = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
const events = [];
let counter = 0;

federation
  .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
    if (identifier !== "fred") return null;
    const pairs = await ctx.getActorKeyPairs(identifier);
    return new Person({
      id: ctx.getActorUri(identifier),
      preferredUsername: identifier,
      name: "Fred Fedify",
      url: ctx.getActorUri(identifier),
      inbox: ctx.getInboxUri(identifier),
      endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
      publicKey: pairs[0].cryptographicKey,
    });
  })
  .setKeyPairsDispatcher(async (_ctx, identifier) =>
    identifier === "fred" ? [keys] : []
  );

async function record(ctx, activity) {
  const json = await activity.toJsonLd({ format: "compact", contextLoader: ctx.contextLoader });
  events.push(json);
}

federation
  .setInboxListeners("/users/{identifier}/inbox", "/inbox")
  .on(Follow, async (ctx, follow) => {
    await record(ctx, follow);
    const follower = await follow.getActor(ctx);
    await ctx.sendActivity(
      { identifier: "fred" },
      follower,
      new Accept({
        id: new URL(`${ctx.getActorUri("fred")}#accepts/${++counter}`),
        actor: ctx.getActorUri("fred"),
        object: follow,
      }),
    );
  })
  .on(Accept, record)
  .on(Create, record)
  .on(Delete, record)
  .on(Update, record)
  .on(Undo, record);

function body(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

async function control(ctx, path, input) {
  const fred = ctx.getActorUri("fred");
  switch (path) {
    case "/control/events":
      return events;
    case "/control/webfinger": {
      // acct: lookups go over https in Fedify; on loopback the test asks
      // over http itself, then has Fedify fetch the actor it names.
      const url = `http://${input.host}/.well-known/webfinger?resource=${encodeURIComponent(input.resource)}`;
      const res = await fetch(url, { headers: { accept: "application/jrd+json" } });
      const jrd = await res.json();
      const self = jrd.links.find((l) => l.rel === "self");
      const actor = await ctx.lookupObject(self.href);
      const key = await actor.getPublicKey(ctx);
      return {
        status: res.status,
        subject: jrd.subject,
        self: self.href,
        type: self.type,
        actor: {
          id: actor.id?.href,
          type: actor.constructor.name,
          preferredUsername: actor.preferredUsername,
          name: actor.name?.toString(),
          inbox: actor.inboxId?.href,
          sharedInbox: actor.endpoints?.sharedInbox?.href,
          outbox: actor.outboxId?.href,
          followers: actor.followersId?.href,
          key: key?.id?.href,
          keyOwner: key?.ownerId?.href,
        },
      };
    }
    case "/control/follow": {
      const actor = await ctx.lookupObject(input.actor);
      await ctx.sendActivity(
        { identifier: "fred" },
        actor,
        new Follow({
          id: new URL(`${fred}#follows/${++counter}`),
          actor: fred,
          object: actor.id,
        }),
      );
      return { sent: true };
    }
    case "/control/note": {
      // A public note to the given actor: a reply when inReplyTo is set,
      // with a mention of them when mention is set.
      const actor = await ctx.lookupObject(input.to);
      const id = new URL(`${fred}/notes/${++counter}`);
      const note = new Note({
        id,
        attribution: fred,
        content: input.content,
        url: id,
        to: PUBLIC_COLLECTION,
        cc: actor.id,
        replyTarget: input.inReplyTo ? new URL(input.inReplyTo) : null,
        tags: input.mention ? [new Mention({ href: actor.id, name: input.mention })] : [],
      });
      await ctx.sendActivity(
        { identifier: "fred" },
        actor,
        new Create({ id: new URL(`${id.href}#create`), actor: fred, object: note, to: PUBLIC_COLLECTION, cc: actor.id }),
      );
      return { id: id.href };
    }
    case "/control/react": {
      // A Like, or an Announce (a boost), of the given object.
      const actor = await ctx.lookupObject(input.to);
      const Kind = input.kind === "announce" ? Announce : Like;
      await ctx.sendActivity(
        { identifier: "fred" },
        actor,
        new Kind({
          id: new URL(`${fred}#${input.kind}s/${++counter}`),
          actor: fred,
          object: new URL(input.object),
        }),
      );
      return { sent: true };
    }
    case "/control/fetch": {
      const object = await ctx.lookupObject(input.url);
      return object ? await object.toJsonLd({ format: "compact", contextLoader: ctx.contextLoader }) : null;
    }
  }
  return undefined;
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host}`);
    const raw = req.method === "GET" || req.method === "HEAD" ? undefined : await body(req);
    if (url.pathname.startsWith("/control/")) {
      const ctx = federation.createContext(new URL(`http://${req.headers.host}/`), undefined);
      const out = await control(ctx, url.pathname, raw && raw.length ? JSON.parse(raw) : {});
      const text = Buffer.from(JSON.stringify(out ?? null));
      res.writeHead(out === undefined ? 404 : 200, {
        "content-type": "application/json",
        "content-length": text.length,
      });
      res.end(text);
      return;
    }
    const request = new Request(url, { method: req.method, headers: req.headers, body: raw });
    const response = await federation.fetch(request, { contextData: undefined });
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  } catch (e) {
    res.writeHead(500, { "content-type": "text/plain" });
    res.end(String(e?.stack ?? e));
  }
});
server.listen(0, "127.0.0.1", () => {
  console.log(`ready http://127.0.0.1:${server.address().port}`);
});
