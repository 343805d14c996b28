"""The configuration's schema: every field with its type, default, help text (units in
it) and limits. Only :mod:`engine.config` reads it: loading, merging and validation live
there; this module is the table and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.constants import INTEGRATION_S


@dataclass(frozen=True)
class Field:
    """One setting: ``key`` is ``section.name``; ``choices`` (if any) and ``minimum`` (if
    not None) bound the coerced value."""

    key: str
    type: type
    default: object
    help: str
    choices: tuple = ()
    minimum: float | None = None


F = Field
SCHEMA: tuple[Field, ...] = (
    # site and array: ONE reference position, used for LST and phasing everywhere
    F("site.latitude_deg", float, 37.2339, "array reference latitude, WGS84 (deg)"),
    F("site.longitude_deg", float, -118.2825, "array reference longitude, WGS84, east + (deg)"),
    F("site.height_m", float, 1222.0, "array reference height above the WGS84 ellipsoid (m)"),
    F("site.casa_name", str, "OVRO_MMA", "telescope name CASA knows the site by"),
    F("array.stations_csv", str, "dsa110_stations.csv",
      "station table (name, lat, lon, elevation); relative paths are under configs/"),
    F("array.default_elevation_m", float, 1182.6, "elevation of stations with none listed (m)"),
    F("array.data_stations", str, "1-47,68-102,103-116",
      "1-based station numbers that carry data (ranges allowed); default: 47 EW + 35 NS + 14 "
      "outriggers, chosen to include stations 101 and 115 whose baselines arrive reversed"),
    F("array.dish_diameter_m", float, 4.65, "dish diameter for the Airy primary beam (m)"),
    # band
    F("band.nsubbands", int, 16, "subband files per observation", minimum=1),
    F("band.nchan_per_subband", int, 48, "channels per subband file", minimum=1),
    F("band.top_freq_hz", float, 1498643188.4765625,
      "centre frequency of channel 0 of subband 00, the highest of the band (Hz)"),
    F("band.channel_width_hz", float, -244140.625,
      "channel width as written by the correlator (Hz, negative: frequency descends)"),
    F("band.integration_s", float, INTEGRATION_S, "integration time (s)"),
    F("band.ntimes", int, 24, "integrations per observation", minimum=1),
    # simulator (the demo and tests make their own observations)
    F("sim.nants", int, 96, "antennas that carry data in simulated files (<= data_stations)",
      minimum=2),
    F("sim.nchan_per_subband", int, 48, "channels per simulated subband", minimum=1),
    F("sim.ntimes", int, 24, "integrations per simulated observation", minimum=1),
    F("sim.subchannels", int, 0,
      "frequencies averaged into each simulated channel: the bandwidth smearing the "
      "correlator's channel average makes, by brute force (0: as many as make the mean "
      "exact to 1e-3 of the brightest apparent source; 1: the channel centre only, "
      "unsmeared)", minimum=0),
    F("sim.nobs", int, 2, "observations in a simulated run", minimum=1),
    F("sim.start", str, "2025-10-02T01:00:00", "UTC start of the simulated run (ISO)"),
    F("sim.dec_deg", float, 54.6, "pointing declination of the simulated run (deg, apparent)"),
    F("sim.nsources", int, 8, "random field point sources per observation", minimum=0),
    F("sim.flux_range_jy", str, "0.3,3.0", "field source flux densities, min,max (Jy)"),
    F("sim.field_radius_deg", float, 1.2,
      "field sources lie within this many degrees of the pointing declination"),
    F("sim.noise_jy", float, 0.0, "per-visibility noise, each of real and imaginary (Jy)"),
    F("sim.gain_amp_rms", float, 0.0, "rms of simulated antenna gain amplitude errors"),
    F("sim.gain_phase_rms_deg", float, 0.0, "rms of simulated antenna gain phases (deg)"),
    F("sim.filename_jitter_s", float, 30.0, "max |jitter| of filename times (s)"),
    F("sim.rfi", str, "",
      "interference and bad data to inject, comma-separated: narrowband, burst, "
      "intermittent, zeros, dead_antenna, dead_pol ('' none; engine/interference.py)"),
    F("sim.rfi_sigma", float, 5.0,
      "injected interference amplitude in units of sim.noise_jy (of 1 Jy without noise)",
      minimum=0.0),
    F("sim.variable", str, "",
      "sources whose flux density this run multiplies, name:factor,... (the reference "
      "catalogue the simulator writes keeps the unvaried values)"),
    F("sim.seed", int, 1234, "random seed of the simulated sky, gains and noise"),
    F("sim.calibrator", str, "", "catalog calibrator that transits during the run ('' none); "
      "sets the start time and pointing declination"),
    F("sim.calibrator_offset_deg", float, 0.57,
      "pointing declination minus the calibrator's apparent declination at transit (deg); "
      "at the telescope calibrators are rarely on the beam axis"),
    F("sim.catalog_flux_error", float, 0.03,
      "fractional rms error of field-source fluxes in the reference catalogue the simulator "
      "writes beside its truth (a survey catalogue is not the truth)", minimum=0.0),
    F("sim.transit_obs", int, -1, "observation (0-based) whose middle holds the transit; "
      "-1: the middle observation of the run"),
    # sky
    F("sky.reference_catalog", str, "",
      "reference catalogue of field sources (CSV: name, ra_deg, dec_deg, flux_jy at 1.4 GHz, "
      "spectral_index; relative paths under configs/); '' uses the calibrator catalogue alone"),
    # paths
    F("paths.incoming", str, "incoming", "folder the correlator writes into"),
    F("paths.stage", str, "stage", "work area for products being made"),
    F("paths.products", str, "products", "published products"),
    F("paths.registry", str, "registry.sqlite", "SQLite registry file"),
    # discovery
    F("discover.time_tolerance_s", float, 60.0,
      "header start times closer than this belong to one observation (s)"),
    F("discover.incomplete_wait_s", float, 1800.0,
      "an observation still short of subbands this long after its newest file is incomplete "
      "(s, file modification times)"),
    F("discover.settle_s", float, 2.0,
      "a file whose size changed within this many seconds is looked at again later (s)"),
    F("discover.unreadable_retries", int, 3,
      "scans a file may stay unreadable before it is quarantined", minimum=1),
    F("discover.same_dec_tol_arcsec", float, 0.2,
      "files whose header pointing declinations differ by less than this are one pointing "
      "(arcsec; one correlator dump has exactly one)", minimum=0.0),
    # flagging (in the subband conversion tasks; docs/FLAGGING.md)
    F("flag.enabled", bool, True, "flag interference and bad data while converting"),
    F("flag.zeros", bool, True, "flag visibilities that are exactly zero (correlator gaps)"),
    F("flag.clip_jy", float, 0.0,
      "flag |V| above this (data units, Jy for calibrated or simulated data; 0: off)",
      minimum=0.0),
    F("flag.dead_fraction", float, 0.1,
      "an antenna (or one of its polarisations) whose median cross-correlation amplitude is "
      "below this fraction of the array's is dead: flagged throughout the subband",
      minimum=0.0),
    F("flag.antenna_max_flagged", float, 0.95,
      "an antenna with more than this fraction of its visibilities flagged is flagged "
      "throughout the subband", minimum=0.0),
    F("flag.sumthreshold", bool, True, "the interference search (SumThreshold) on or off"),
    F("flag.search", str, "antenna",
      "where the engine's SumThreshold runs: antenna (on each antenna's mean normalised "
      "amplitude over its baselines, after a robust clip per baseline; sqrt(N - 1) more "
      "sensitive to an emitter all antennas receive, N / 2 times less work) or baseline "
      "(on every baseline's plane, as AOFlagger does)", choices=("antenna", "baseline")),
    F("flag.baseline_clip_sigma", float, 7.0,
      "with flag.search = antenna: a baseline's cell above its median amplitude + this x "
      "1.4826 x MAD is flagged (what one baseline alone sees; 0: off)", minimum=0.0),
    F("flag.backend", str, "engine",
      "the interference search: engine (numba SumThreshold, kernels/flagging.py) or "
      "aoflagger (the optional GPLv3 aoflagger wheel, its strategy below)",
      choices=("engine", "aoflagger")),
    F("flag.aoflagger_strategy", str, "",
      "AOFlagger Lua strategy file for flag.backend = aoflagger ('' AOFlagger's generic "
      "default strategy)"),
    F("flag.sigma_floor", float, 0.01,
      "the SumThreshold noise estimate is at least this fraction of the baseline's median "
      "amplitude: a dynamic-range floor, so that smooth sky structure in noiseless or "
      "sky-dominated data is not taken for interference (0: off)", minimum=0.0),
    F("flag.chi1_sigma", float, 6.0,
      "SumThreshold threshold for single samples, in robust sigmas of the amplitude "
      "residual; windows of M samples use chi1 / rho^log2(M)", minimum=0.5),
    F("flag.rho", float, 1.5, "SumThreshold threshold ratio between window sizes",
      minimum=1.0),
    F("flag.iterations", int, 3,
      "SumThreshold passes, thresholds chi1 x 4, x 2, x 1, the background refitted between",
      minimum=1),
    F("flag.max_window_chan", int, 32, "largest SumThreshold window along frequency",
      minimum=1),
    F("flag.max_window_time", int, 16, "largest SumThreshold window along time", minimum=1),
    F("flag.sir_eta", float, 0.2,
      "scale-invariant rank operator: a sample is flagged when a window around it is at "
      "least 1 - eta flagged (0: off)", minimum=0.0),
    F("flag.background_half_time", int, 2,
      "background running median half-width along time (integrations)", minimum=0),
    F("flag.background_half_chan", int, 3,
      "background running median half-width along frequency (channels)", minimum=0),
    F("flag.extend_baselines", float, 0.2,
      "the array's vote: a (time, channel) cell the interference search found on at least "
      "this fraction of the antennas (flag.search = antenna) or of the baselines (baseline, "
      "aoflagger), and on two at least, is flagged on every baseline (0: off)", minimum=0.0),
    F("flag.max_fraction", float, 0.5,
      "an observation with more than this fraction of its cross-correlations flagged is "
      "quarantined, not imaged", minimum=0.0),
    # forced photometry and light curves (docs/SCIENCE.md)
    F("photometry.enabled", bool, True,
      "forced photometry of the reference catalogue in every per-observation image"),
    F("photometry.min_pb", float, 0.3,
      "measure a source only where the drift-averaged primary beam is at least this",
      minimum=0.0),
    F("photometry.noise_box_beams", float, 20.0,
      "the local noise is the robust rms of the residual image in a box this many beams "
      "wide around the source", minimum=2.0),
    F("photometry.flux_error_frac", float, 0.03,
      "fraction of the flux density added in quadrature to each error (the flux scale's "
      "own uncertainty)", minimum=0.0),
    F("photometry.eta_threshold", float, 10.0,
      "a source is a variable candidate when eta (weighted reduced chi-square) exceeds "
      "this ...", minimum=0.0),
    F("photometry.v_threshold", float, 0.1,
      "... and V (fractional rms) exceeds this ...", minimum=0.0),
    F("photometry.min_measurements", int, 2, "... over at least this many measurements",
      minimum=2),
    # source finding and catalogue QA (docs/SCIENCE.md)
    F("sources.enabled", bool, True,
      "find sources in every image and mosaic; the catalogue is a product file"),
    F("sources.finder", str, "pybdsf",
      "pybdsf (PyBDSF) or aegean (BANE + Aegean); docs/SCIENCE.md has the comparison",
      choices=("pybdsf", "aegean")),
    F("sources.innerclip", float, 5.0,
      "a source's peak is at least this many local sigmas (PyBDSF thresh_pix, Aegean "
      "seedclip)", minimum=1.0),
    F("sources.outerclip", float, 3.0,
      "its island extends down to this many local sigmas (thresh_isl, floodclip)",
      minimum=1.0),
    F("sources.min_size_beam", float, 0.5,
      "a component fitted narrower than this fraction of the restoring beam (either axis) "
      "is not a source (clean artefacts, noise streaks) and is dropped", minimum=0.0),
    F("sources.max_island_beams", float, 200.0,
      "PyBDSF leaves out islands larger than this many restoring-beam areas (a radio "
      "galaxy of DSA-110 spans tens; a larger island is a bad image's sidelobes, whose "
      "fitting kept PyBDSF busy for over 8 minutes); 0: no limit", minimum=0.0),
    F("sources.min_pb", float, 0.2,
      "keep a source only where the image's primary-beam response is at least this",
      minimum=0.0),
    F("sources.new_min_snr", float, 10.0,
      "a detection in a per-observation image at least this many sigmas bright that no "
      "reference or earlier source explains is a new source, measured in every later image "
      "(0: off)", minimum=0.0),
    F("sources.match_radius_beams", float, 0.5,
      "a detection matches a reference source within this many restoring-beam major axes",
      minimum=0.0),
    F("sources.qa_min_snr", float, 10.0,
      "reference sources predicted at least this many sigmas bright (apparent) are the "
      "ones the matched fraction and flux ratio use", minimum=0.0),
    F("sources.qa_min_matches", int, 3,
      "with fewer matched reference sources the flux and position QA is recorded but does "
      "not decide publication", minimum=1),
    F("sources.qa_flux_ratio_min", float, 0.85,
      "a product whose median flux ratio (found / reference) is below this is not "
      "published", minimum=0.0),
    F("sources.qa_flux_ratio_max", float, 1.15, "... or above this", minimum=0.0),
    F("sources.qa_max_offset_beams", float, 0.25,
      "... or whose median position offset from the reference exceeds this many beam "
      "major axes", minimum=0.0),
    # conversion
    F("convert.phasing", str, "meridian",
      "meridian: keep the recorded drift phasing, one field per integration (tclean only); "
      "single: rephase every integration to one centre (by default the meridian at the "
      "observation's middle, as the telescope's own pipeline images)",
      choices=("meridian", "single")),
    F("convert.single_ra_deg", float, float("nan"),
      "J2000 RA of the single phase centre (deg); NaN: the mid-time meridian"),
    F("convert.single_dec_deg", float, float("nan"), "J2000 Dec of the single phase centre"),
    F("convert.zarr_compress", bool, False, "compress the zarr stage store"),
    F("convert.max_channel_width_hz", float, 1.0e6,
      "average adjacent channels of a subband (after flagging, in the imaged frame) up to "
      "this width: 4 x 244 kHz keeps bandwidth smearing below 1 % to the corner of a "
      "full-scale image and grids a quarter of the visibilities (docs/IMAGING.md); "
      "0: keep the recorded channels", minimum=0.0),
    # calibration
    F("calibrate.enabled", bool, True, "solve on calibrator transits and apply the solutions"),
    F("calibrate.catalog", str, "calibrators.csv", "calibrator catalog under configs/"),
    F("calibrate.max_offset_deg", float, 1.5,
      "a calibrator counts if its dec is this close to the pointing (deg; the Airy beam "
      "still passes 37 % at 1.5 deg and 1.5 GHz)"),
    F("calibrate.model_min_flux_jy", float, 0.05,
      "reference-catalogue sources whose apparent flux density (through the primary beam, "
      "band centre, mid-observation) reaches this join the calibrator's model (Jy)",
      minimum=0.0),
    F("calibrate.refant", str, "", "reference antenna name; '' picks the one nearest the "
      "array centre"),
    F("calibrate.minsnr", float, 3.0, "minimum SNR of a solution"),
    F("calibrate.gain_solint", str, "inf", "gain solution interval (CASA syntax)"),
    F("calibrate.uvrange", str, "", "uv range used for solving (CASA syntax, '' all)"),
    F("calibrate.same_dec_tol_deg", float, 1.15,
      "calibration tables apply to observations whose pointing declination is within this "
      "of the calibrator observation's (deg)", minimum=0.0),
    F("calibrate.bandpass_valid_h", float, 12.0,
      "bandpass tables apply within +- this many hours of the transit (observation time)"),
    F("calibrate.gain_valid_h", float, 1.0,
      "gain tables apply within +- this many hours of the transit (observation time)"),
    # imaging
    F("image.cell_per_beam", float, 4.0, "pixels across the synthesized beam (lambda_min/B_max)",
      minimum=1.0),
    F("image.pb_level", float, 0.1, "image out to where the primary beam falls to this level",
      minimum=0.0),
    F("image.max_imsize", int, 2048, "largest image side (pixels)", minimum=64),
    F("image.cell_arcsec", float, 0.0, "cell size (arcsec); 0: derived from the data"),
    F("image.imsize", int, 0, "image side (pixels); 0: derived from the data", minimum=0),
    F("image.backend", str, "tclean",
      "imager: tclean; wsclean (needs convert.phasing = single; at full scale 4-7 x "
      "faster than tclean at the same residual, the telescope's configuration "
      "configs/dsa110.toml uses it: docs/IMAGING.md); auto (WSClean when its binary is "
      "installed and the MS has one phase centre, tclean otherwise)",
      choices=("auto", "tclean", "wsclean")),
    F("image.threads", int, 1,
      "CPUs an imaging task reserves in Ray, and the imager's threads (WSClean -j; without "
      "it WSClean takes every core of the node whatever Ray reserved, so N image tasks on N "
      "CPUs would run N x N threads; tclean is single-threaded)", minimum=1),
    F("image.restoring_beam_arcsec", float, 0.0,
      "circular restoring beam FWHM (arcsec) for every image; 0: each imager's fitted beam",
      minimum=0.0),
    F("image.gridder", str, "wproject",
      "tclean gridder: w-projection is needed off axis (2.7 km baselines, 2.7 deg beam)",
      choices=("standard", "wproject", "widefield")),
    F("image.wprojplanes", int, -1, "w-projection planes (-1: CASA chooses)"),
    F("image.nterms", int, 1, "Taylor terms: 1 uses Hogbom (converged at full scale, and "
      "3 x faster than mtmfs on the science tests' observations); 2 (mtmfs) models "
      "spectral slopes, but diverged at full scale next to a bright source "
      "(docs/IMAGING.md)", minimum=1),
    F("image.weighting", str, "briggs", "tclean weighting",
      choices=("natural", "uniform", "briggs")),
    F("image.robust", float, 0.5, "Briggs robust parameter"),
    F("image.niter", int, 100000, "largest number of clean components (the stopping rule "
      "is image.nsigma; this is a safety cap)", minimum=0),
    F("image.nsigma", float, 3.0,
      "clean until the peak residual is below this many times the RESIDUAL's robust rms, "
      "re-measured at every major cycle (tclean nsigma, WSClean -auto-threshold)",
      minimum=0.0),
    F("image.threshold_jy", float, 0.0,
      "absolute clean threshold (Jy); cleaning stops at the larger of this and nsigma",
      minimum=0.0),
    F("image.mask", str, "two-stage",
      "automatic masking. two-stage (WSClean's -auto-mask, done with tclean too): clean "
      "without a mask to mask_sigma, then only where the first stage found emission down to "
      "nsigma; auto-multithresh: tclean's (measured worse here: docs/IMAGING.md); none",
      choices=("two-stage", "auto-multithresh", "none")),
    F("image.mask_sigma", float, 5.0,
      "automatic mask: the first stage cleans to this many residual rms, and its model "
      "(grown by one beam) is the mask (tclean; WSClean -auto-mask; auto-multithresh's "
      "noisethreshold)", minimum=0.0),
    F("image.mask_sidelobe_threshold", float, 1.25,
      "tclean auto-multithresh: mask only emission above this many times the largest PSF "
      "sidelobe x peak residual (a snapshot of DSA-110's T array has sidelobes of 0.3-0.6, "
      "so CASA's 2-3 for 12 m arrays would mask nothing)", minimum=0.0),
    F("image.mask_min_beam_frac", float, 0.3,
      "tclean auto-multithresh: prune mask regions smaller than this fraction of the beam "
      "area (0: no pruning)", minimum=0.0),
    F("image.max_major_cycles", int, 20,
      "largest number of major cycles (tclean nmajor, WSClean -nmiter); -1 unlimited",
      minimum=-1),
    F("image.cycle_gain", float, 0.8,
      "WSClean -mgain: clean this fraction of the peak residual per minor cycle",
      minimum=0.01),
    F("image.cycle_factor", float, 0.0,
      "tclean cyclefactor: a minor cycle stops at this x the PSF's largest sidelobe x the "
      "peak residual. 0: 1.0 (CASA's) for Hogbom, 2.0 for mtmfs, where 1.0 let it diverge "
      "(stop code 6) next to a bright source drifting through the beam (docs/IMAGING.md)",
      minimum=0.0),
    F("image.max_psf_fraction", float, 0.8,
      "tclean maxpsffraction: a minor cycle goes on until the peak residual is below at most "
      "this fraction of where it began (CASA's 0.8; WSClean's -mgain 0.8 is 0.2 here); "
      "with the snapshot PSF's 0.3-0.6 sidelobes and cycle_factor 2 this cap decides how "
      "many major cycles a clean takes", minimum=0.01),
    F("image.subtract_min_flux_jy", float, 1.0,
      "reference-catalogue sources at least this bright (apparent, Jy) are subtracted "
      "through the primary beam at every integration and channel before cleaning and "
      "restored after (a source drifting through the beam changes brightness, which clean "
      "cannot model); 0: never", minimum=0.0),
    F("image.subtract_outside_min_jy", float, 0.02,
      "reference-catalogue sources outside the image at least this bright (apparent, Jy) are "
      "subtracted the same way before cleaning and not restored: clean cannot reach them, "
      "and the snapshot PSF's far sidelobes (1 % rms, 7 % peaks 0.2-1.2 deg out) left a "
      "0.93 Jy source beyond a full-scale image's edge at 2.4 x thermal inside it "
      "(docs/IMAGING.md); 0: never", minimum=0.0),
    F("image.max_thermal_ratio", float, 3.0,
      "QA: an image whose inner residual rms exceeds this many times the data's thermal "
      "estimate is not published", minimum=1.0),
    F("image.min_beam_pixels", float, 2.0,
      "QA: an image whose restoring beam's minor axis (FWHM) spans fewer pixels than this is "
      "not published: a point source half a pixel off along the minor axis loses "
      "1 - 2^-(1/p)^2 of its peak (20 % at 1.75 pixels; more off the diagonal), which no "
      "resampling recovers (docs/IMAGING.md)", minimum=0.0),
    F("image.require_calibration", bool, True,
      "observations without valid calibration wait (true) or are imaged as they are (false)"),
    # mosaics
    F("mosaic.size", int, 10, "observations per mosaic", minimum=1),
    F("mosaic.overlap", int, 2, "observations shared by consecutive mosaics", minimum=0),
    F("mosaic.max_gap_obs", float, 1.5,
      "a start-to-start gap longer than this many observation cadences splits windows"),
    F("mosaic.max_span_min", float, 60.0, "a mosaic spans less than this (minutes)"),
    F("mosaic.same_dec_tol_deg", float, 0.057,
      "consecutive observations further apart in pointing declination start a new mosaic "
      "segment (deg)", minimum=0.0),
    F("mosaic.min_pb", float, 0.2,
      "blank mosaic pixels that no member sees with at least this primary-beam response"),
    # publishing
    F("publish.keep_ms", bool, True,
      "keep each observation's MS in stage after its image is published (for reprocessing); "
      "false deletes it"),
    F("publish.max_attempts", int, 3, "attempts to move a product into products/", minimum=1),
    F("publish.min_dynamic_range", float, 3.0,
      "QA: peak / residual rms below this rejects an image, unless it is a sound empty field "
      "(publish.accept_empty_fields)"),
    F("publish.accept_empty_fields", bool, True,
      "publish an image with no source above publish.min_dynamic_range when its residual is "
      "within image.max_thermal_ratio of the thermal noise and the reference catalogue (if "
      "any) predicts no source in it: its upper limits are light-curve points"),
    # ray
    F("ray.address", str, "local", "'local' starts an embedded cluster; else a Ray address"),
    F("ray.num_cpus", int, 0, "CPUs for an embedded cluster (0: all)", minimum=0),
    F("ray.max_obs_in_flight", int, 2, "observations converted/imaged at once", minimum=1),
    F("ray.task_memory_gb", float, 0.5, "memory reserved per subband task (GB)"),
    F("ray.assembly_memory_gb", float, 1.0, "memory reserved per MS assembly task (GB)"),
    F("ray.retries_convert", int, 2, "Ray retries of a subband or assembly task that raised "
      "a transient error (I/O on a shared file system) or lost its worker", minimum=0),
    F("ray.retries_calibrate", int, 1, "Ray retries of a calibration task (as above)",
      minimum=0),
    F("ray.retries_image", int, 1, "Ray retries of an imaging task (as above)", minimum=0),
    F("ray.retries_mosaic", int, 1, "Ray retries of a mosaic task (as above)", minimum=0),
    F("ray.include_dashboard", bool, False, "start the Ray dashboard with an embedded cluster"),
    F("ray.idle_workers_per_cpu", int, 2,
      "idle worker processes an embedded cluster keeps per CPU (Ray's num_workers_soft_limit; "
      "0: Ray's own, one per free CPU). Conversion and CASA tasks run in separate worker "
      "pools; with Ray's limit the idle pool of one kind is killed while the other kind "
      "fills the CPUs, and each of its next tasks starts a cold process (imports, numba's "
      "cache, PyBDSF: seconds each; benchmarks case worker_reuse)", minimum=0),
    F("ray.worker_max_tasks", int, 20,
      "a worker process exits after this many image, calibration, assembly or mosaic tasks "
      "(subband conversions: 16 times this; Ray's max_calls) and Ray starts a fresh one: "
      "what a library keeps per task stays bounded in workers that idle_workers_per_cpu "
      "keeps alive (CASA's image workers grew about 15 MB per tiny image in the soak, "
      "issue 17); 0: never", minimum=0),
    # driver
    F("driver.max_attempts", int, 3,
      "attempts at a failed observation before it stays failed (a gap for the mosaics)",
      minimum=1),
    F("driver.stage_budget_gb", float, 0.0,
      "largest size of the stage area (GB, 1e9 bytes); over it kept MSs no open mosaic "
      "window needs are removed and no new observation is taken until there is room "
      "(docs/ARCHITECTURE.md); 0: no budget", minimum=0.0),
    F("driver.retry_after_s", float, 600.0,
      "a following driver takes up a failed observation again this long after it failed "
      "(a batch run retries at its start)", minimum=0.0),
    F("driver.max_rss_mb", float, 2048.0,
      "a following driver whose private resident memory (RssAnon, not the shared pages of "
      "Ray's object store it touched) exceeds this (MB) stops taking work, drains "
      "its tasks and exits with code 75 for its supervisor to start it again (a safety net "
      "for a standing process; recovery makes the restart lossless); 0: never", minimum=0.0),
    F("driver.malloc_arenas", int, 2,
      "glibc malloc arenas of the driver process (mallopt M_ARENA_MAX, set when the driver "
      "starts; glibc's default is 8 per core, one per thread of Ray's and gRPC's). With 2 "
      "and the driver's malloc_trim every 30 s, a following driver's private memory grew "
      "116 instead of 360-390 MB an hour in a 60-observation soak (issue 17); 0: glibc's "
      "default", minimum=0),
    F("driver.registry_timeout_s", float, 30.0,
      "how long a registry write waits for another process's lock before the run stops (s)",
      minimum=0.1),
    # logging
    F("log.level", str, "INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)
