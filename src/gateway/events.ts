/**
 * The event endpoint's validation: an agent's POST …/events body becomes a GatewayEvent on its
 * attempt, or a clear 400/413 naming the field. A reward must be a finite number (JSON has no NaN,
 * so a body that sends one is named as such); the attempt's reward is its last reward event.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { badRequest } from '../serve/errors.js';
import type { AttemptRecord, GatewayEvent } from './records.js';
import { readLimited, typeName } from './request.js';

/**
 * Read, check and append one event to `rec` (its reward set by a reward event). At most
 * `maxEvents` per attempt, so one agent cannot grow the gateway's memory without bound.
 */
export async function acceptEvent(
  req: IncomingMessage,
  rec: AttemptRecord,
  limits: { maxEventBytes: number; maxEvents: number },
): Promise<GatewayEvent> {
  const raw = await readLimited(req, limits.maxEventBytes);
  const text = raw.toString('utf8');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    const bad = /(?<![A-Za-z"])(-?Infinity|NaN)(?![A-Za-z"])/.exec(text);
    if (bad)
      throw badRequest(
        `the event body has ${bad[1]}, which is not JSON; a reward must be a finite number`,
        'data.value',
        'invalid_reward',
      );
    throw badRequest(`the event body is not valid JSON: ${(err as Error).message}`, null, 'invalid_json');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw badRequest(
      `the event must be a JSON object {"event_type", "data"}; got ${typeName(body)}`,
      null,
      'invalid_body',
    );
  const ev = body as Record<string, unknown>;
  if (typeof ev.event_type !== 'string' || ev.event_type === '' || ev.event_type.length > 128) {
    throw badRequest(
      `event_type must be a non-empty string of at most 128 characters (e.g. "reward"); got ${ev.event_type === undefined ? 'nothing' : typeName(ev.event_type)}`,
      'event_type',
      ev.event_type === undefined ? 'missing_required_parameter' : 'invalid_type',
    );
  }
  const data = ev.data === undefined || ev.data === null ? {} : ev.data;
  if (typeof data !== 'object' || Array.isArray(data))
    throw badRequest(`data must be an object; got ${typeName(data)}`, 'data', 'invalid_type');
  const d = data as Record<string, unknown>;
  if (ev.event_type === 'reward') {
    const v = d.value;
    if (v === undefined)
      throw badRequest('a reward event needs data.value (a finite number)', 'data.value', 'missing_required_parameter');
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw badRequest(
        `data.value must be a finite number; got ${typeName(v)} ${JSON.stringify(v)?.slice(0, 40)}`,
        'data.value',
        'invalid_reward',
      );
    }
  }
  if (rec.events.length >= limits.maxEvents)
    throw badRequest(
      `attempt ${rec.attemptId} already posted ${limits.maxEvents} events, the most one attempt may`,
      null,
      'too_many_events',
    );
  const event: GatewayEvent = {
    eventId: `ev-${randomBytes(8).toString('hex')}`,
    eventType: ev.event_type,
    data: d,
    timestamp: Date.now(),
  };
  rec.events.push(event);
  if (event.eventType === 'reward') rec.reward = d.value as number;
  return event;
}
