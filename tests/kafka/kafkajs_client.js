#!/usr/bin/env node
// kafkajs side of the Kafka client tests. Driven by run_kafka_tests.py, which generates the
// messages and checks what comes back; this program only speaks kafkajs.
//
//   node kafkajs_client.js codecs
//       prints {"gzip": null, "snappy": null | "why unavailable", ...}
//   node kafkajs_client.js produce --brokers H:P --topic T --codec C --input msgs.json
//       produces every message (explicit partition, key, headers, CreateTime) with acks=-1
//   node kafkajs_client.js consume --brokers H:P --topic T --partitions 3 --count N --output out.json
//       kafkajs has no assign(): joins a fresh consumer group, seeks every partition to 0
//       (consumer.seek, the kafkajs way to "assign and seek"), and writes what it received.
//
// Messages are JSON with base64 bytes: {p, k, v, h: [[name, b64], ...], ts}.
// Every step is bounded by --timeout seconds; exit code 0 means the step completed.
'use strict'

const fs = require('fs')
const path = require('path')

process.chdir(__dirname) // resolve node_modules next to this file

function args() {
  const out = { _: [] }
  const a = process.argv.slice(2)
  for (let i = 0; i < a.length; i++) {
    if (a[i].startsWith('--')) out[a[i].slice(2)] = a[++i]
    else out._.push(a[i])
  }
  return out
}

// Codec plugins. kafkajs has gzip built in; the others are registered from npm packages.
// @kafkajs/zstd does not build on Node 20 (its native cppzst 2.0.6 needs C++17 headers it does
// not ask for), so zstd uses zstd-codec (Emscripten build of the reference library).
async function registerCodecs() {
  const { CompressionTypes, CompressionCodecs } = require('kafkajs')
  const status = { none: null, gzip: null, snappy: null, lz4: null, zstd: null }
  const sample = Buffer.from('yottastore '.repeat(50))
  async function check(name, type, make) {
    try {
      const factory = await make()
      const codec = factory()
      const packed = await codec.compress({ buffer: sample })
      const back = await codec.decompress(packed)
      if (!Buffer.from(back).equals(sample)) throw new Error('round trip changed the bytes')
      CompressionCodecs[type] = factory
    } catch (e) {
      status[name] = `${name} codec unavailable: ${e && e.message ? e.message : e}`
    }
  }
  await check('snappy', CompressionTypes.Snappy, async () => require('kafkajs-snappy'))
  await check('lz4', CompressionTypes.LZ4, async () => {
    const LZ4Codec = require('kafkajs-lz4')
    return new LZ4Codec().codec
  })
  await check('zstd', CompressionTypes.ZSTD, async () => {
    const { ZstdCodec } = require('zstd-codec')
    const zstd = await new Promise((resolve) => ZstdCodec.run(resolve))
    const simple = new zstd.Simple()
    // Streaming decompression also reads frames that carry no content size (librdkafka, Java).
    const streaming = new zstd.Streaming()
    return () => ({
      async compress(encoder) {
        return Buffer.from(simple.compress(encoder.buffer, 3))
      },
      async decompress(buffer) {
        const out = streaming.decompress(buffer)
        if (!out) throw new Error('zstd: cannot decompress')
        return Buffer.from(out)
      },
    })
  })
  return status
}

function compressionType(codec) {
  const { CompressionTypes } = require('kafkajs')
  return {
    none: CompressionTypes.None,
    gzip: CompressionTypes.GZIP,
    snappy: CompressionTypes.Snappy,
    lz4: CompressionTypes.LZ4,
    zstd: CompressionTypes.ZSTD,
  }[codec]
}

function client(a) {
  const { Kafka, logLevel } = require('kafkajs')
  return new Kafka({
    clientId: 'yottastore-tests',
    brokers: [a.brokers],
    connectionTimeout: 5000,
    requestTimeout: 30000,
    logLevel: logLevel.WARN,
    retry: { retries: 3, initialRetryTime: 200, maxRetryTime: 2000 },
  })
}

const b64 = (s) => (s === null || s === undefined ? null : Buffer.from(s, 'base64'))
const enc = (b) => (b === null || b === undefined ? null : Buffer.from(b).toString('base64'))

async function produce(a) {
  const messages = JSON.parse(fs.readFileSync(a.input, 'utf8'))
  const producer = client(a).producer({ allowAutoTopicCreation: false, idempotent: false })
  await producer.connect()
  try {
    const compression = compressionType(a.codec)
    const chunk = Number(a.chunk || 1000)
    for (let i = 0; i < messages.length; i += chunk) {
      const batch = messages.slice(i, i + chunk).map((m) => {
        const headers = {}
        for (const [name, value] of m.h) {
          const v = b64(value)
          if (name in headers) headers[name] = [].concat(headers[name], [v])
          else headers[name] = v
        }
        return { partition: m.p, key: b64(m.k), value: b64(m.v), headers, timestamp: String(m.ts) }
      })
      // Awaiting each send keeps the per-partition order of the input.
      await producer.send({ topic: a.topic, acks: -1, timeout: 30000, compression, messages: batch })
    }
  } finally {
    await producer.disconnect()
  }
  console.log(JSON.stringify({ produced: messages.length }))
}

async function consume(a) {
  const t0 = Date.now(); const dbg = (s) => process.env.KAFKAJS_DEBUG && console.error(`${Date.now() - t0} ms ${s}`)
  const want = Number(a.count)
  const partitions = Number(a.partitions)
  const kafka = client(a)
  const consumer = kafka.consumer({
    groupId: a.group || `yottastore-tests-${process.pid}-${Date.now()}`,
    maxWaitTimeInMs: 500,
    sessionTimeout: 10000,
    rebalanceTimeout: 10000,
    retry: { retries: 3 },
  })
  const got = []
  let resolveDone, rejectDone
  const done = new Promise((res, rej) => ((resolveDone = res), (rejectDone = rej)))
  await consumer.connect()
  dbg('connected')
  consumer.on(consumer.events.GROUP_JOIN, () => dbg('joined'))
  // kafkajs consumes only through a consumer group: without FindCoordinator, JoinGroup,
  // SyncGroup and Heartbeat on the broker it crashes here, and that is the failure to report.
  consumer.on(consumer.events.CRASH, (e) => {
    const err = e.payload && e.payload.error
    rejectDone(new Error(`kafkajs consumer crashed: ${err && err.name ? err.name + ': ' : ''}${err && err.message ? err.message : JSON.stringify(e.payload)}`))
  })
  try {
    await consumer.subscribe({ topics: [a.topic], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: true,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const h = []
          for (const [name, value] of Object.entries(m.headers || {})) {
            for (const v of [].concat(value)) h.push([name, enc(v)])
          }
          got.push({ p: batch.partition, o: Number(m.offset), k: enc(m.key), v: enc(m.value), h, ts: Number(m.timestamp) })
        }
        if (got.length >= want) { dbg('all received'); resolveDone() }
      },
    })
    // The documented kafkajs way to start from a given offset: seek right after run().
    try {
      for (let p = 0; p < partitions; p++) consumer.seek({ topic: a.topic, partition: p, offset: '0' })
    } catch (e) {
      rejectDone(e)
    }
    const timer = setTimeout(resolveDone, Number(a.timeout || 120) * 1000)
    try {
      await done
    } finally {
      clearTimeout(timer)
    }
  } finally {
    await consumer.disconnect().catch(() => {})
    dbg('disconnected')
  }
  fs.writeFileSync(a.output, JSON.stringify(got))
  console.log(JSON.stringify({ consumed: got.length }))
}

async function main() {
  const a = args()
  const cmd = a._[0]
  const deadline = setTimeout(() => {
    console.error(`kafkajs_client: ${cmd} did not finish within ${a.timeout || 120} s`)
    process.exit(3)
  }, (Number(a.timeout || 120) + 15) * 1000)
  deadline.unref()
  const status = await registerCodecs()
  if (cmd === 'codecs') {
    console.log(JSON.stringify(status))
    return
  }
  if (a.codec && status[a.codec]) throw new Error(status[a.codec])
  if (cmd === 'produce') await produce(a)
  else if (cmd === 'consume') await consume(a)
  else throw new Error(`unknown command ${cmd}`)
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`kafkajs_client: ${e && e.stack ? e.stack : e}`)
    process.exit(1)
  },
)
