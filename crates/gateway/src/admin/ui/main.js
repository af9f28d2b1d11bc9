// Entry point: loads the pages, then starts.
import { boot } from './app.js';
import './pages.js';
import './more.js';
import './edit.js';

boot();
