/**
 * @module The web client's one way to make DOM: `h(tag, props, ...children)`. Text always becomes
 * text nodes; props are fixed names written by our code (never taken from user data), so nothing a
 * user typed can become markup or an attribute name.
 */
type Child = Node | string | number | false | null | undefined;

export interface Props {
  class?: string;
  id?: string;
  role?: string;
  title?: string;
  hidden?: boolean;
  tabindex?: number;
  type?: string;
  placeholder?: string;
  /** aria-* and data-* attributes, without the prefix: { aria: { label: "…" }, data: { seq: 3 } } */
  aria?: Record<string, string | number | boolean>;
  data?: Record<string, string | number>;
  on?: Partial<{ [K in keyof HTMLElementEventMap]: (e: HTMLElementEventMap[K]) => void }>;
  attrs?: Record<string, string>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) el.className = props.class;
  if (props.id) el.id = props.id;
  if (props.role) el.setAttribute("role", props.role);
  if (props.title) el.title = props.title;
  if (props.hidden) el.hidden = true;
  if (props.tabindex !== undefined) el.tabIndex = props.tabindex;
  if (props.type) el.setAttribute("type", props.type);
  if (props.placeholder) el.setAttribute("placeholder", props.placeholder);
  for (const [k, v] of Object.entries(props.aria ?? {})) el.setAttribute(`aria-${k}`, String(v));
  for (const [k, v] of Object.entries(props.data ?? {})) el.dataset[k] = String(v);
  for (const [k, v] of Object.entries(props.attrs ?? {})) el.setAttribute(k, v);
  for (const [type, fn] of Object.entries(props.on ?? {})) el.addEventListener(type, fn as EventListener);
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

export function clear(el: Element): void {
  el.replaceChildren();
}

export function formatTime(ts: number): string {
  return new Date(ts).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
