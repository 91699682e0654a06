/**
 * @module Light and dark themes: the system's choice by default (followed live), or the user's,
 * kept in localStorage. Always resolved to html[data-theme], so the stylesheet has one dark palette.
 */
type Theme = "system" | "light" | "dark";
const KEY = "parley-theme";
const ORDER: Theme[] = ["system", "light", "dark"];
const systemDark = matchMedia("(prefers-color-scheme: dark)");

export function currentTheme(): Theme {
  const saved = localStorage.getItem(KEY);
  return saved === "light" || saved === "dark" ? saved : "system";
}

export function applyTheme(theme = currentTheme()): void {
  const resolved = theme === "system" ? (systemDark.matches ? "dark" : "light") : theme;
  document.documentElement.dataset.theme = resolved;
}

systemDark.addEventListener("change", () => applyTheme());

export function cycleTheme(): void {
  const next = ORDER[(ORDER.indexOf(currentTheme()) + 1) % ORDER.length] as Theme;
  if (next === "system") localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, next);
  applyTheme(next);
}

export function themeLabel(): string {
  return { system: "◐ System", light: "☀ Light", dark: "☾ Dark" }[currentTheme()];
}
