'use strict';
/**
 * A circuit breaker: after a send finds Kafka gone, sends fail at once
 * (without touching the network) until a probe finds Kafka answering again.
 *
 * Probes run in the background every `probeIntervalMs`, one at a time, on a
 * timer that doesn't keep the process alive.
 */

class Circuit {
  /**
   * @param {{probeIntervalMs: number, probe: () => Promise<void>,
   *   onOpen?: (error: unknown) => void, onClose?: (openMs: number) => void}} options
   *   probe resolves when Kafka answers, rejects when it doesn't
   */
  constructor({ probeIntervalMs, probe, onOpen = () => {}, onClose = () => {} }) {
    this._probeIntervalMs = probeIntervalMs;
    this._probe = probe;
    this._onOpen = onOpen;
    this._onClose = onClose;
    this._openedAt = null;
    this._timer = null;
    this._stopped = false;
    this.lastError = null;
  }

  get isOpen() {
    return this._openedAt !== null;
  }

  /** Since when it is open (a Date), or null. */
  get openSince() {
    return this._openedAt === null ? null : new Date(this._openedAt);
  }

  /** Record a failure: open the circuit (if it isn't) and start probing. */
  open(error) {
    this.lastError = error;
    if (this.isOpen || this._stopped) return;
    this._openedAt = Date.now();
    this._onOpen(error);
    this._schedule();
  }

  /** Stop probing for good (the service is disconnecting). */
  stop() {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
  }

  _schedule() {
    if (this._stopped) return;
    this._timer = setTimeout(() => this._runProbe(), this._probeIntervalMs);
    this._timer.unref();
  }

  async _runProbe() {
    this._timer = null;
    try {
      await this._probe();
    } catch (error) {
      this.lastError = error;
      this._schedule();
      return;
    }
    if (this._stopped) return;
    const openMs = Date.now() - this._openedAt;
    this._openedAt = null;
    this.lastError = null;
    this._onClose(openMs);
  }
}

module.exports = { Circuit };
