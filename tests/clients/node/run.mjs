// One popular JavaScript client against the proxy: `node run.mjs <client>` with PROFILO_URL
// (the proxy, no /v1) and PROFILO_KEY set. Prints one JSON line: the texts it got back.
import OpenAI from "openai";
import { generateText, streamText } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const baseURL = process.env.PROFILO_URL + "/v1";
const apiKey = process.env.PROFILO_KEY;
const prompt = "What food should I cook tonight?";
const features = { memory: true, user_profile: true };

async function openaiNode() {
  // openai-node sends every field of the params object: `features` and `user` go as they are.
  const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
  const reply = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: prompt }],
    user: "alice",
    features,
  });
  const stream = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: prompt }],
    stream: true,
    features,
    collection_id: "alice",
  });
  let streamed = "";
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  return { json: reply.choices[0].message.content, stream: streamed };
}

async function aiSdkOpenAI() {
  // @ai-sdk/openai: the end user from a header; memory from the account's default features.
  const openai = createOpenAI({ baseURL, apiKey, headers: { "X-Collection-Id": "alice" } });
  const json = await generateText({ model: openai.chat("gpt-4o-mini"), prompt, maxRetries: 0 });
  const result = streamText({ model: openai.chat("gpt-4o-mini"), prompt, maxRetries: 0 });
  let streamed = "";
  for await (const part of result.textStream) streamed += part;
  // its default model speaks the Responses API: served too (memory in `instructions`)
  const responses = await generateText({ model: openai("gpt-4o-mini"), prompt, maxRetries: 0 });
  return { json: json.text, stream: streamed, responses: responses.text };
}

async function aiSdkCompatible() {
  // @ai-sdk/openai-compatible: providerOptions under the provider's name go into the body.
  const profilo = createOpenAICompatible({ name: "profilo", baseURL, apiKey });
  const providerOptions = { profilo: { features, collection_id: "alice" } };
  const json = await generateText({
    model: profilo.chatModel("gpt-4o-mini"), prompt, providerOptions, maxRetries: 0,
  });
  const result = streamText({
    model: profilo.chatModel("gpt-4o-mini"), prompt, providerOptions, maxRetries: 0,
  });
  let streamed = "";
  for await (const part of result.textStream) streamed += part;
  return { json: json.text, stream: streamed };
}

const clients = { "openai": openaiNode, "ai-sdk-openai": aiSdkOpenAI, "ai-sdk-compatible": aiSdkCompatible };
const run = clients[process.argv[2]];
if (!run) {
  console.error("usage: node run.mjs " + Object.keys(clients).join("|"));
  process.exit(2);
}
console.log(JSON.stringify(await run()));
